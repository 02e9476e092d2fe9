"""The tables of a report: one row per method, and paired comparisons.

Pure functions of the runs `finished_runs.collect` returns: `aggregate`
(mean and sample std over seeds), `to_markdown`, `to_csv`, `paired_rows`
(paired differences against a reference method, per seed), `holm_adjusted`
and `paired_markdown`.
"""

import csv
import io
from typing import Any, Sequence

import numpy as np

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import paired


def _mean_std(values):
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def aggregate(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per method (in the order of `runs`).

  Row fields: method, n, seeds, last_mean, last_std, best_mean, best_std
  (test accuracies as fractions; std None for one seed), val_mean, val_std
  (validation accuracy at the last epoch, what tuning chooses on; None
  without a validation split), best_on ('test',
  'val' or 'test/val'), teacher_accuracy, images_per_sec, wall_minutes
  (means; None when no run has the value).
  """
  rows = []
  for method in dict.fromkeys(r['method'] for r in runs):
    group = [r for r in runs if r['method'] == method]
    summaries = [r['summary'] for r in group]
    last_mean, last_std = _mean_std([s.get('test_accuracy')
                                     for s in summaries])
    best_mean, best_std = _mean_std(
        [finished_runs.best_test_accuracy(r) for r in group])
    val_mean, val_std = _mean_std([s.get('val_accuracy') for s in summaries])
    # The whole run: every segment (runs written before the total was kept
    # have their one segment's).
    walls = [s.get('wall_seconds_total', s.get('wall_seconds')) / 60
             for s in summaries
             if s.get('wall_seconds_total', s.get('wall_seconds')) is not None]
    rows.append({
        'method': method, 'n': len(group),
        'seeds': [r['seed'] for r in group],
        'last_mean': last_mean, 'last_std': last_std,
        'best_mean': best_mean, 'best_std': best_std,
        'val_mean': val_mean, 'val_std': val_std,
        'best_on': '/'.join(sorted({s.get('best_on', 'test')
                                    for s in summaries}, reverse=True)),
        'teacher_accuracy': _mean_std(
            [s.get('teacher_test_accuracy') for s in summaries])[0],
        'images_per_sec': _mean_std(
            [s.get('images_per_sec') for s in summaries])[0],
        'wall_minutes': _mean_std(walls)[0],
    })
  return rows


def _pct(x, empty='-'):
  return empty if x is None else f'{100 * x:.2f}'


def _num(x, empty='-'):
  return empty if x is None else f'{x:.2f}'


def _best_header(rows):
  chosen = {r['best_on'] for r in rows}
  where = chosen.pop() if len(chosen) == 1 else 'val or test (per run)'
  return f'top-1 @ best epoch (chosen on {where}) (%)'


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
  """A markdown table of `aggregate`'s rows."""
  has_val = any(r.get('val_mean') is not None for r in rows)
  header = (['method', 'n']
            + (['val top-1 @ last epoch (%)'] if has_val else [])
            + ['top-1 @ last epoch (%)', _best_header(rows),
               'teacher top-1 (%)', 'images/s', 'wall (min)'])
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
  for r in rows:
    cells = ([r['method'], str(r['n'])]
             + ([f'{_pct(r["val_mean"])} ± {_pct(r["val_std"])}']
                if has_val else [])
             + [f'{_pct(r["last_mean"])} ± {_pct(r["last_std"])}',
                f'{_pct(r["best_mean"])} ± {_pct(r["best_std"])}',
                _pct(r['teacher_accuracy']), _num(r['images_per_sec']),
                _num(r['wall_minutes'])])
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


CSV_FIELDS = ('method', 'n', 'seeds', 'last_top1_mean', 'last_top1_std',
              'best_top1_mean', 'best_top1_std', 'best_chosen_on',
              'val_top1_mean', 'val_top1_std', 'teacher_top1',
              'images_per_sec', 'wall_minutes')


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
  """CSV of `aggregate`'s rows: accuracies in %, 2 decimals; '' = none."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(CSV_FIELDS)
  for r in rows:
    writer.writerow([
        r['method'], r['n'], ' '.join(str(s) for s in r['seeds']),
        _pct(r['last_mean'], ''), _pct(r['last_std'], ''),
        _pct(r['best_mean'], ''), _pct(r['best_std'], ''), r['best_on'],
        _pct(r['val_mean'], ''), _pct(r['val_std'], ''),
        _pct(r['teacher_accuracy'], ''), _num(r['images_per_sec'], ''),
        _num(r['wall_minutes'], '')])
  return out.getvalue()


def paired_rows(runs: Sequence[dict[str, Any]], reference: str
                ) -> list[dict[str, Any]]:
  """`reference` minus each other method, paired by seed (paired.py).

  Returns:
    One row per other method that shares seeds with `reference`: 'method',
    'last' and 'best' (paired_difference dicts of test top-1 in points, at
    the last and at the best epoch), in the order of `runs`. [] when
    `reference` has no run.
  """
  def by_seed(method, best):
    values = {}
    for r in runs:
      if r['method'] == method:
        acc = (finished_runs.best_test_accuracy(r) if best
               else r['summary'].get('test_accuracy'))
        if acc is not None:
          values[r['seed']] = 100 * acc
    return values

  ref_last, ref_best = by_seed(reference, False), by_seed(reference, True)
  rows = []
  for method in dict.fromkeys(r['method'] for r in runs):
    if method == reference or not ref_last:
      continue
    last = by_seed(method, False)
    if not set(last) & set(ref_last):
      continue
    best = by_seed(method, True)
    rows.append({
        'method': method,
        'last': paired.paired_difference(ref_last, last),
        'best': (paired.paired_difference(ref_best, best)
                 if set(best) & set(ref_best) else None)})
  return rows


def holm_adjusted(rows: Sequence[dict[str, Any]], families: int = 1
                  ) -> list[dict[str, Any]]:
  """Holm-adjusted p-values over the family of every comparison in `rows`
  (each row's last- and best-epoch difference), times `families` (capped at
  1: Bonferroni across that many tables reported side by side): rows with
  'p_last', 'p_best', 'holm_last', 'holm_best' added (None without an
  interval)."""
  p = [(paired.p_value(r['last']),
        paired.p_value(r['best']) if r['best'] else None) for r in rows]
  flat = [None if x is None else min(1.0, families * x)
          for x in paired.holm([x for pair in p for x in pair])]
  return [dict(r, p_last=pl, p_best=pb, holm_last=flat[2 * i],
               holm_best=flat[2 * i + 1])
          for i, (r, (pl, pb)) in enumerate(zip(rows, p))]


def paired_markdown(reference: str, rows: Sequence[dict[str, Any]],
                    families: int = 1) -> str:
  """The paired differences as a markdown table (95% CIs, p-values
  Holm-adjusted over the table's comparisons and, for `families` > 1, times
  the number of tables), then one verdict a row."""
  def cell(d):
    if d is None:
      return '-'
    if d['ci_low'] is None:
      return f'{d["mean"]:+.2f}'
    return f'{d["mean"]:+.2f} [{d["ci_low"]:+.2f}, {d["ci_high"]:+.2f}]'

  def p(x):
    return '-' if x is None else f'{x:.3g}'

  rows = holm_adjusted(rows, families)
  label = 'Holm' if families == 1 else f'Holm x {families}'
  lines = [f'| {reference} minus | n | last epoch, mean [95% CI] | {label} p '
           f'(last) | best epoch, mean [95% CI] | {label} p (best) | '
           'per-seed differences (last) |',
           '|---|---:|---:|---:|---:|---:|---|']
  for r in rows:
    lines.append(f'| {r["method"]} | {r["last"]["n"]} | {cell(r["last"])} | '
                 f'{p(r["holm_last"])} | {cell(r["best"])} | '
                 f'{p(r["holm_best"])} | '
                 + ' '.join(f'{d:+.2f}' for d in r['last']['diffs']) + ' |')
  lines.append('')
  lines += ['- ' + paired.verdict(reference, r['method'], r['last'],
                                  adjusted_p=r['holm_last'],
                                  correction=f'{label}-adjusted')
            + ' (last epoch)' for r in rows]
  return '\n'.join(lines) + '\n'


def setting_line(runs):
  """One line on what was trained, from the summaries."""
  def values(key):
    return sorted({str(r['summary'].get(key)) for r in runs
                   if r['summary'].get(key) not in (None, '')})
  parts = [f'student {", ".join(values("model"))}']
  if values('teacher'):
    parts.append(f'teacher {", ".join(values("teacher"))}')
  parts.append(f'data set {", ".join(values("dataset"))}')
  epochs = sorted({round(r['summary'].get('epochs', 0), 2) for r in runs})
  steps = sorted({r['summary'].get('steps') for r in runs})
  parts.append(f'{", ".join(map(str, epochs))} epochs '
               f'({", ".join(map(str, steps))} steps) per run')
  return '; '.join(parts) + '.'
