r"""The S-1 check's follow-up verdict (CONFIRMATION.md, addendum of
2026-12-06), as fixed before its first run.

  python results/fashion_mnist_lowdata/s1_points_verdict.py \
      [results/fashion_mnist_lowdata/runs/confirm/resnet20-resnet8]

adain_both_points_s1 passed the S-1 check's rule; it and adain_default (S
alone at the same S weight, 1) train on the confirmation's seeds 5-14. One
contrast, adain_both_points_s1 - adain_default: test top-1 at the last
epoch in points, paired by seed, a two-sided paired t-test, alpha 0.05, a
family of one; the confirmation's decision words. Only once all twenty runs
are in (no interim look) it writes s1_points_verdict.md beside them; until
then it says how many are missing (exit status 1).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confirm_verdict  # pylint: disable=g-import-not-at-top,wrong-import-position

from adain_kd_jax.experiments import paired  # pylint: disable=g-import-not-at-top,wrong-import-position
from adain_kd_jax.experiments import tables  # pylint: disable=g-import-not-at-top,wrong-import-position

ARMS = ('adain_both_points_s1', 'adain_default')
SEEDS = confirm_verdict.SEEDS


def contrast(runs):
  """(name, paired difference, p, decision) of the one contrast."""
  diff = {r['method']: r for r in tables.paired_rows(runs, ARMS[0])}[
      ARMS[1]]['last']
  p = paired.p_value(diff)
  return (f'{ARMS[0]} - {ARMS[1]}', diff, p,
          confirm_verdict.decision(diff, p))


def to_markdown(result):
  name, d, p, words = result
  seeds = ' '.join(f'{x:+.2f}' for x in d['diffs'])
  return '\n'.join([
      '# S-1 added to S at S\'s weight: the pre-registered verdict', '',
      'P1 (resnet20 -> resnet8), seeds 5-14, test top-1 at the last epoch, '
      'paired by seed; a two-sided paired t-test, one contrast, alpha 0.05 '
      '(CONFIRMATION.md, addendum).', '',
      '| contrast | mean [95% CI] | per seed (5-14) | p | verdict |',
      '|---|---:|---|---:|---|',
      f'| {name} | {d["mean"]:+.2f} [{d["ci_low"]:+.2f}, '
      f'{d["ci_high"]:+.2f}] | {seeds} | {p:.3g} | {words} |']) + '\n'


def main(argv):
  directory = confirm_verdict.directory_arg(argv, __doc__)
  return confirm_verdict.write_when_complete(
      directory, ARMS, SEEDS, lambda runs: to_markdown(contrast(runs)),
      's1_points_verdict.md')


if __name__ == '__main__':
  sys.exit(main(sys.argv))
