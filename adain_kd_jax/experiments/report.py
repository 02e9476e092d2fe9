r"""Tables and figures of a sweep (see sweep.py): one row per method.

  python -m adain_kd_jax.experiments.report runs/sweep [--nostats] [--notensorboard]

Reads every DIR/<method>/seed<k>/summary.json (finished runs; unfinished ones
are left out) with its metrics.jsonl, or, for DIR a single run (train.py's
workdir), DIR/summary.json and DIR/compare_<method>/summary.json, and writes

  * DIR/report.md and DIR/report.csv: per method the number of seeds, test
    top-1 at the last epoch and at the best epoch (mean and sample std over
    seeds, ddof=1; '-' in the markdown and empty in the CSV for one seed),
    the teacher's test top-1, mean images/s and mean wall time in minutes.
    Accuracies are in %. The best epoch of a run is the evaluation with its
    `best_accuracy`, chosen on the split in `best_on` (val when the run held
    out a validation set, else test); the table reports the *test* accuracy
    at that epoch (with best_on = test, that is `best_accuracy` itself).
  * DIR/accuracy_curves.png: test accuracy per epoch, mean and min..max band
    over seeds; where every run evaluated once, a bar per method with its
    value (and each seed's as a dot).
  * DIR/stats_scatter_<method>.png (--stats, default on): for each method
    with a connector (stat_l2, adain, ...), the student's channel statistics
    at the first insertion point against the teacher's, before and after
    training, for its lowest seed. Needs the run's checkpoints, its config
    (DIR/<method>/seed<k>/config.json, written by the sweep, or
    DIR/sweep.json) and the test set; cached in the run's
    insertion_stats.npz. Skipped with a note when any of them is missing.
  * DIR/<method>/seed<k>/tb/: TensorBoard event files of metrics.jsonl
    (`tensorboard --logdir DIR`).

The library part is pure: `collect(dir)`, `aggregate(runs)`,
`to_markdown(rows)`, `to_csv(rows)`.
"""

import csv
import glob
import io
import json
import os
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from adain_kd_jax.experiments import paired
from adain_kd_jax.experiments import plots

_STATS = flags.DEFINE_bool(
    'stats', True, 'Plot the insertion point statistics (loads JAX, the '
    'checkpoints, the teacher and the test set).')
_STATS_EXAMPLES = flags.DEFINE_integer(
    'stats_examples', 500, 'Test images the statistics are averaged over.')
_PAIRED_WITH = flags.DEFINE_string(
    'paired_with', 'adain', 'report.md compares this method with every other '
    'one, paired by seed, with 95% confidence intervals (\'\' = off).')
_TENSORBOARD = flags.DEFINE_bool(
    'tensorboard', True, 'Write DIR/<method>/seed<k>/tb/ event files.')

STATS_CACHE = 'insertion_stats.npz'


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _method_order(directory: str) -> list[str]:
  path = os.path.join(directory, 'sweep.json')
  if os.path.exists(path):
    try:
      return list(_read_json(path).get('methods', []))
    except (OSError, ValueError):
      pass
  return []


def _single_runs(directory: str) -> list[str]:
  """A run directory's own summary.json and those of its compare_<method>
  runs (train.py with config.compare_to): the runs of a single run."""
  if not os.path.isfile(os.path.join(directory, 'summary.json')):
    return []
  return [os.path.join(directory, 'summary.json')] + sorted(glob.glob(
      os.path.join(directory, 'compare_*', 'summary.json')))


def collect(directory: str) -> list[dict[str, Any]]:
  """The finished runs under `directory` (`*/seed*/summary.json`), or of a
  single run: DIR/summary.json and DIR/compare_*/summary.json, each row
  named by the summary's method.

  Returns:
    One dict per run: 'method', 'seed', 'dir', 'summary' (summary.json) and
    'metrics' (the records of metrics.jsonl), ordered by method (as in
    sweep.json, then by name) and seed.
  """
  runs = []
  single = _single_runs(directory)
  for path in single or glob.glob(os.path.join(directory, '*', 'seed*',
                                               'summary.json')):
    run_dir = os.path.dirname(path)
    summary = _read_json(path)
    # The directory names the row: the method in a sweep, a variant or a
    # setting in a tuning directory (whose runs share a method).
    method = (summary.get('method', 'run') if single
              else os.path.basename(os.path.dirname(run_dir)))
    seed = summary.get('seed')
    if seed is None:
      seed = int(os.path.basename(run_dir)[len('seed'):])
    runs.append({'method': method, 'seed': seed, 'dir': run_dir,
                 'summary': summary, 'metrics': plots.read_metrics(run_dir)})
  order = _method_order(directory)
  rank = lambda m: (order.index(m), '') if m in order else (len(order), m)
  return sorted(runs, key=lambda r: (rank(r['method']), r['seed']))


def best_test_accuracy(run: dict[str, Any]) -> float | None:
  """Test accuracy at the run's best epoch (see the module docstring)."""
  summary = run['summary']
  for r in run['metrics']:
    if r.get('split') == 'test' and r.get('step') == summary.get('best_step'):
      return r['accuracy']
  if summary.get('best_on', 'test') == 'test':
    return summary.get('best_accuracy')
  return None


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
    best_mean, best_std = _mean_std([best_test_accuracy(r) for r in group])
    val_mean, val_std = _mean_std([s.get('val_accuracy') for s in summaries])
    walls = [s['wall_seconds'] / 60 for s in summaries
             if s.get('wall_seconds') is not None]
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
        acc = (best_test_accuracy(r) if best
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


def holm_adjusted(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Holm-adjusted p-values over the family of every comparison in `rows`
  (each row's last- and best-epoch difference): rows with 'p_last',
  'p_best', 'holm_last', 'holm_best' added (None without an interval)."""
  p = [(paired.p_value(r['last']),
        paired.p_value(r['best']) if r['best'] else None) for r in rows]
  flat = paired.holm([x for pair in p for x in pair])
  return [dict(r, p_last=pl, p_best=pb, holm_last=flat[2 * i],
               holm_best=flat[2 * i + 1])
          for i, (r, (pl, pb)) in enumerate(zip(rows, p))]


def paired_markdown(reference: str, rows: Sequence[dict[str, Any]]) -> str:
  """The paired differences as a markdown table (95% CIs, Holm-adjusted
  p-values over the table's comparisons), then one verdict a row."""
  def cell(d):
    if d is None:
      return '-'
    if d['ci_low'] is None:
      return f'{d["mean"]:+.2f}'
    return f'{d["mean"]:+.2f} [{d["ci_low"]:+.2f}, {d["ci_high"]:+.2f}]'

  def p(x):
    return '-' if x is None else f'{x:.3g}'

  rows = holm_adjusted(rows)
  lines = [f'| {reference} minus | n | last epoch, mean [95% CI] | Holm p '
           '(last) | best epoch, mean [95% CI] | Holm p (best) | per-seed '
           'differences (last) |',
           '|---|---:|---:|---:|---:|---:|---|']
  for r in rows:
    lines.append(f'| {r["method"]} | {r["last"]["n"]} | {cell(r["last"])} | '
                 f'{p(r["holm_last"])} | {cell(r["best"])} | '
                 f'{p(r["holm_best"])} | '
                 + ' '.join(f'{d:+.2f}' for d in r['last']['diffs']) + ' |')
  lines.append('')
  lines += ['- ' + paired.verdict(reference, r['method'], r['last'],
                                  adjusted_p=r['holm_last'])
            + ' (last epoch)' for r in rows]
  return '\n'.join(lines) + '\n'


def _setting(runs):
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


def write_report(directory: str, runs, rows, figures=(),
                 paired_with: str = 'adain') -> None:
  """Writes DIR/report.md and DIR/report.csv."""
  text = [f'# Sweep report: {os.path.abspath(directory)}', '',
          _setting(runs), '', to_markdown(rows),
          'Test top-1 accuracy, mean ± sample std (ddof=1) over seeds '
          "('-': one seed). The best epoch of a run is its evaluation with "
          'the highest accuracy on the split it was chosen on; the table '
          'gives the test accuracy there. images/s: training throughput '
          '(compilation and evaluation excluded); wall: whole run.', '']
  pairs = paired_rows(runs, paired_with) if paired_with else []
  if pairs:
    text += [f'## {paired_with} against each method, paired by seed', '',
             paired_markdown(paired_with, pairs),
             'Differences of test top-1 in points, per seed (same seed = '
             'same initialisation, validation split and batch order); 95% '
             'confidence interval of the mean difference from Student t '
             '(not corrected); p-values of the paired t-test, Holm-adjusted '
             f'over the {2 * len(pairs)} comparisons of this table (last and '
             'best epoch), and the verdicts follow them.', '']
  if figures:
    text += ['Figures: ' + ', '.join(f'`{f}`' for f in figures) + '.', '']
  text += [f'TensorBoard: `tensorboard --logdir {directory}`.', '']
  with open(os.path.join(directory, 'report.md'), 'w') as f:
    f.write('\n'.join(text))
  with open(os.path.join(directory, 'report.csv'), 'w') as f:
    f.write(to_csv(rows))


def run_config(directory: str, run: dict[str, Any]):
  """The run's config: its config.json, else sweep.json's (None if neither)."""
  from adain_kd_jax.training import run_record
  path = os.path.join(run['dir'], 'config.json')
  if os.path.exists(path):
    return run_record.load(path)
  path = os.path.join(directory, 'sweep.json')
  if not os.path.exists(path):
    return None
  config = run_record.from_dict(_read_json(path)['config'])
  config.method = run['method']
  config.seed = run['seed']
  config.compare_to = ''
  return config


def _load_stats(path):
  with np.load(path) as z:
    return {'point': str(z['point']), 'step': int(z['step']),
            **{k: {'mean': z[f'{k}_mean'], 'std': z[f'{k}_std']}
               for k in ('teacher', 'before', 'after')}}


def _save_stats(path, stats):
  np.savez(path, point=stats['point'], step=stats['step'],
           **{f'{k}_{s}': stats[k][s] for k in ('teacher', 'before', 'after')
              for s in ('mean', 'std')})


def stats_figures(directory: str, runs, num_examples: int) -> list[str]:
  """Writes DIR/stats_scatter_<method>.png where possible; their names."""
  from adain_kd_jax.data import registry  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.data import sources  # pylint: disable=g-import-not-at-top
  names, images = [], {}
  for method in dict.fromkeys(r['method'] for r in runs):
    run = min((r for r in runs if r['method'] == method),
              key=lambda r: r['seed'])
    cache = os.path.join(run['dir'], STATS_CACHE)
    if (os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(
        os.path.join(run['dir'], 'summary.json'))):
      stats = _load_stats(cache)
    else:
      config = run_config(directory, run)
      if config is None or not os.path.isdir(os.path.join(run['dir'],
                                                          'checkpoints')):
        continue
      try:
        key = (config.dataset, config.data_source, config.data_dir)
        if key not in images:
          images[key] = sources.load(
              config.dataset, registry.DATASETS[config.dataset].test_split,
              source=config.data_source, data_dir=config.data_dir or None,
              download=False, limit=num_examples)[0]
        stats = plots.insertion_point_stats(config, run['dir'], images[key])
      except ValueError as e:
        if 'has no connector' not in str(e):
          print(f'No statistics plot for {method}: {e}', flush=True)
        continue
      except Exception as e:  # pylint: disable=broad-except
        # Data, teacher or checkpoints missing or unreadable: the figure is
        # optional, the tables are not.
        print(f'No statistics plot for {method}: {type(e).__name__}: {e}',
              flush=True)
        continue
      _save_stats(cache, stats)
    name = f'stats_scatter_{method}.png'
    plots.stats_scatter(
        stats['teacher'], stats['before'], stats['after'],
        os.path.join(directory, name),
        title=f'{method} (seed {run["seed"]}) at {stats["point"]}: step 0 '
        f'vs. step {stats["step"]}')
    names.append(name)
  return names


def make_report(directory: str, *, stats: bool = True,
                stats_examples: int = 500, tensorboard: bool = True,
                paired_with: str = 'adain') -> str:
  """Writes the tables, figures and event files of DIR; returns the table."""
  runs = collect(directory)
  if not runs:
    raise FileNotFoundError(
        f'No finished run under {directory}: name a sweep directory '
        '(*/seed*/summary.json) or a run directory (summary.json).')
  rows = aggregate(runs)
  figures = ['accuracy_curves.png']
  plots.accuracy_curves(runs, os.path.join(directory, figures[0]))
  if stats:
    figures += stats_figures(directory, runs, stats_examples)
  if tensorboard:
    for run in runs:
      plots.write_tensorboard(run['dir'])
  write_report(directory, runs, rows, figures, paired_with=paired_with)
  print(f'Wrote {directory}/report.md, report.csv and '
        f'{", ".join(figures)}.', flush=True)
  return to_markdown(rows)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('Usage: python -m adain_kd_jax.experiments.report SWEEP_DIR')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    table = make_report(argv[1], stats=_STATS.value,
                        stats_examples=_STATS_EXAMPLES.value,
                        tensorboard=_TENSORBOARD.value,
                        paired_with=_PAIRED_WITH.value)
  except FileNotFoundError as e:
    # One line on stderr, exit status 2: the directory is wrong, not the usage.
    from adain_kd_jax import cli
    cli.fail(e, argv)
  print(table)


def run():
  """The console script `adain-kd-report`."""
  from adain_kd_jax import cli
  cli.run(main)


if __name__ == '__main__':
  run()
