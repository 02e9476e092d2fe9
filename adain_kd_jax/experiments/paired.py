"""Paired comparisons of two methods over the same seeds.

Same seed = same initialisation, validation split and batch order for every
method, so the per-seed difference removes the seed's own luck; its mean
gets a Student-t 95% confidence interval (two-sided) and a paired t-test
p-value. A report of several comparisons corrects the p-values for their
number with Holm's step-down method (`holm`), which controls the chance of
any false "beats" or "is below" among them at 5%. Pure functions.
"""

import math
from typing import Mapping, Sequence

from scipy import stats

def t975(df: int) -> float:
  """t_{0.975, df}, the two-sided 95% quantile of Student's t (scipy)."""
  if df < 1:
    raise ValueError(f'df={df} must be >= 1.')
  return float(stats.t.ppf(0.975, df))


def paired_difference(a: Mapping[int, float],
                      b: Mapping[int, float]) -> dict:
  """Mean of a[s] - b[s] over the seeds both have, with its 95% CI.

  Args:
    a, b: {seed: value}.

  Returns:
    {'n', 'seeds', 'diffs', 'mean', 'std' (ddof 1), 'ci_low', 'ci_high',
     'excludes_zero'}; with n < 2 the std and CI are None.

  Raises:
    ValueError: when the two share no seed.
  """
  seeds = sorted(set(a) & set(b))
  if not seeds:
    raise ValueError(f'No common seeds: {sorted(a)} vs {sorted(b)}.')
  diffs = [float(a[s]) - float(b[s]) for s in seeds]
  n = len(diffs)
  mean = sum(diffs) / n
  out = {'n': n, 'seeds': seeds, 'diffs': diffs, 'mean': mean, 'std': None,
         'ci_low': None, 'ci_high': None, 'excludes_zero': None}
  if n >= 2:
    std = math.sqrt(sum((d - mean)**2 for d in diffs) / (n - 1))
    half = t975(n - 1) * std / math.sqrt(n)
    out.update(std=std, ci_low=mean - half, ci_high=mean + half,
               excludes_zero=bool(mean - half > 0 or mean + half < 0))
  return out


def p_value(diff: dict) -> float | None:
  """Two-sided paired t-test p-value of `paired_difference`'s mean (None
  with fewer than two seeds). Identical differences give 0 (1 if all 0)."""
  if diff['n'] < 2:
    return None
  if diff['std'] == 0:
    return 0.0 if diff['mean'] != 0 else 1.0
  t = abs(diff['mean']) / (diff['std'] / math.sqrt(diff['n']))
  return float(2 * stats.t.sf(t, diff['n'] - 1))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
  """Holm-adjusted p-values, in the order given (None stays None).

  Sorted ascending over the m given values, the i-th (1-based) becomes
  max over j <= i of min(1, (m - j + 1) p_(j)).
  """
  given = [(p, i) for i, p in enumerate(p_values) if p is not None]
  m = len(given)
  out: list[float | None] = [None] * len(p_values)
  running = 0.0
  for rank, (p, i) in enumerate(sorted(given)):
    running = max(running, min(1.0, (m - rank) * p))
    out[i] = running
  return out


def verdict(name_a: str, name_b: str, diff: dict, unit: str = 'points',
            adjusted_p: float | None = None,
            correction: str = 'Holm-adjusted') -> str:
  """One sentence: is a better than b, worse, or not distinguishable?
  With `adjusted_p` (named by `correction`) the verdict follows it."""
  if diff['ci_low'] is None:
    return (f'{name_a} vs {name_b}: {diff["mean"]:+.2f} {unit} from one seed; '
            'no interval.')
  ci = (f'{diff["mean"]:+.2f} {unit}, 95% CI [{diff["ci_low"]:+.2f}, '
        f'{diff["ci_high"]:+.2f}], n={diff["n"]}')
  if adjusted_p is not None:
    # With a correction, the verdict follows the adjusted p-value.
    ci += f', {correction} p={adjusted_p:.3g}'
    if adjusted_p < 0.05:
      side = 'beats' if diff['mean'] > 0 else 'is below'
      return f'{name_a} {side} {name_b}: {ci}.'
    return f'{name_a} and {name_b} are not distinguishable: {ci}.'
  if diff['ci_low'] > 0:
    return f'{name_a} beats {name_b}: {ci}.'
  if diff['ci_high'] < 0:
    return f'{name_a} is below {name_b}: {ci}.'
  return f'{name_a} and {name_b} are not distinguishable: {ci}.'
