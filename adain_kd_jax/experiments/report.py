r"""Tables and figures of a sweep (see sweep.py): one row per method.

  python -m adain_kd_jax.experiments.report runs/sweep [--nostats] \
      [--notensorboard] [--paired_with=adain,kd] [--rows=none,kd,adain \
      --name=report_subset]

Reads every DIR/<method>/seed<k>/summary.json (finished runs; unfinished ones
are left out) with its metrics.jsonl, or, for DIR a single run (train.py's
workdir), DIR/summary.json and DIR/compare_<method>/summary.json, and writes

  * DIR/report.md and DIR/report.csv (NAME.md and NAME.csv with --name):
    per method the number of seeds, test top-1 at the last epoch and at the
    best epoch (mean and sample std over seeds, ddof=1; '-' in the markdown
    and empty in the CSV for one seed), the teacher's test top-1, mean
    images/s and mean wall time in minutes.
    Accuracies are in %. The best epoch of a run is the evaluation with its
    `best_accuracy`, chosen on the split in `best_on` (val when the run held
    out a validation set, else test); the table reports the *test* accuracy
    at that epoch (with best_on = test, that is `best_accuracy` itself).
    Then, for each method in --paired_with, one table of it minus every
    other method, paired by seed (95% CIs; p-values Holm-adjusted within the
    table and, with k tables, times k). With --rows, only those methods'
    runs enter the tables and the figure, so a family of comparisons fixed
    in advance stays that family when other methods' runs join DIR.
  * DIR/accuracy_curves.png (NAME_accuracy_curves.png with --name): test
    accuracy per epoch, mean and min..max band over seeds; where every run
    evaluated once, a bar per method with its value (and each seed's as a
    dot).
  * DIR/stats_scatter_<method>.png (--stats, default on): for each method
    with a connector (stat_l2, adain, ...), the student's channel statistics
    at the first insertion point against the teacher's, before and after
    training, for its lowest seed with checkpoints or a cache. Needs the
    run's checkpoints, its config (DIR/<method>/seed<k>/config.json, written
    by the sweep, or DIR/sweep.json) and the test set; cached in the run's
    insertion_stats.npz (valid while its summary.json is unchanged, so a
    committed cache replaces the checkpoints). The teacher is the one the run
    recorded, looked for above the run's directory first (the clone it was
    trained in, whatever install runs the report). Skipped with a note when
    something is missing; with --stats given, that is an error instead.
  * DIR/<method>/seed<k>/tb/: TensorBoard event files of metrics.jsonl
    (`tensorboard --logdir DIR`).

The runs are read by `finished_runs`, the tables made by `tables` (pure),
the statistics scatter by `stats_figures`; this module writes them.
"""

import os
import re
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import plots
from adain_kd_jax.experiments import stats_figures
from adain_kd_jax.experiments import tables

FLAGS = flags.FLAGS


class ReportInputError(ValueError):
  """A flag names something the sweep directory does not have."""


def select_methods(runs, methods: Sequence[str]):
  """The runs of `methods` (all runs when it is empty).

  Raises:
    ReportInputError: a method has no finished run; names the flag and the
      methods there are.
  """
  if not methods:
    return list(runs)
  have = list(dict.fromkeys(r['method'] for r in runs))
  missing = [m for m in methods if m not in have]
  if missing:
    raise ReportInputError(
        f'--rows: no finished run of {", ".join(missing)}; the methods '
        f'with finished runs are {", ".join(have)}.')
  return [r for r in runs if r['method'] in methods]


def write_report(directory: str, runs, rows, figures=(),
                 paired_with: Sequence[str] = ('adain',),
                 name: str = 'report') -> None:
  """Writes DIR/NAME.md and DIR/NAME.csv."""
  text = [f'# Sweep report: {os.path.normpath(directory)}', '',
          tables.setting_line(runs), '', tables.to_markdown(rows),
          'Test top-1 accuracy, mean ± sample std (ddof=1) over seeds '
          "('-': one seed). The best epoch of a run is its evaluation with "
          'the highest accuracy on the split it was chosen on; the table '
          'gives the test accuracy there. images/s: training throughput '
          '(compilation and evaluation excluded); wall: whole run.', '']
  families = {m: tables.paired_rows(runs, m) for m in paired_with if m}
  families = {m: pairs for m, pairs in families.items() if pairs}
  across = (f', times {len(families)} (Bonferroni across the {len(families)} '
            'tables of this report)' if len(families) > 1 else '')
  for reference, pairs in families.items():
    text += [f'## {reference} against each method, paired by seed', '',
             tables.paired_markdown(reference, pairs, len(families)),
             'Differences of test top-1 in points, per seed (same seed = '
             'same initialisation, validation split and batch order); 95% '
             'confidence interval of the mean difference from Student t '
             '(not corrected); p-values of the paired t-test, Holm-adjusted '
             f'over the {2 * len(pairs)} comparisons of this table (last and '
             f'best epoch){across}, and the verdicts follow them.', '']
  if figures:
    text += ['Figures: ' + ', '.join(f'`{f}`' for f in figures) + '.', '']
  text += [f'TensorBoard: `tensorboard --logdir {directory}`.', '']
  with open(os.path.join(directory, f'{name}.md'), 'w') as f:
    f.write('\n'.join(text))
  with open(os.path.join(directory, f'{name}.csv'), 'w') as f:
    f.write(tables.to_csv(rows))


def make_report(directory: str, *, stats: bool = True,
                stats_examples: int = 500, tensorboard: bool = True,
                paired_with: Sequence[str] = ('adain',),
                methods: Sequence[str] = (), name: str = 'report',
                stats_strict: bool = False) -> str:
  """Writes the tables, figures and event files of DIR; returns the table.
  With `stats_strict` (--stats given), a statistics plot that cannot be
  made is an error, not a note."""
  if not name or os.sep in name or name.startswith('.'):
    raise ReportInputError(
        f'--name={name!r}: give a plain file name without a folder or '
        'extension, e.g. --name=report_decisive.')
  runs = finished_runs.collect(directory)
  if not runs:
    raise FileNotFoundError(
        f'No finished run under {directory}: name a sweep directory '
        '(*/seed*/summary.json) or a run directory (summary.json).')
  runs = select_methods(runs, methods)
  rows = tables.aggregate(runs)
  figures = ['accuracy_curves.png' if name == 'report'
             else f'{name}_accuracy_curves.png']
  plots.accuracy_curves(runs, os.path.join(directory, figures[0]))
  if stats:
    figures += stats_figures.stats_figures(directory, runs, stats_examples,
                                           strict=stats_strict)
  if tensorboard:
    for run in runs:
      plots.write_tensorboard(run['dir'])
  write_report(directory, runs, rows, figures, paired_with=paired_with,
               name=name)
  print(f'Wrote {directory}/{name}.md, {name}.csv and '
        f'{", ".join(figures)}.', flush=True)
  return tables.to_markdown(rows)


def trained_tables(run_dirs: Sequence[str]) -> str:
  """The results table of what `run_dirs` hold, one per directory that
  holds them (a sweep's DIR for DIR/<method>/seed<k>, else the run itself),
  with those runs only: what a sweep and a campaign print at their end. ''
  when none of them has finished."""
  groups = {}
  for run_dir in run_dirs:
    run_dir = os.path.abspath(run_dir)
    in_sweep = re.fullmatch(r'seed\d+', os.path.basename(run_dir))
    group = os.path.dirname(os.path.dirname(run_dir)) if in_sweep else run_dir
    groups.setdefault(group, set()).add(run_dir)
  parts = []
  for group, dirs in groups.items():
    runs = [r for r in (finished_runs.collect(group)
                        if os.path.isdir(group) else [])
            if os.path.abspath(r['dir']) in dirs]
    if runs:
      parts.append(f'{group}:\n{tables.to_markdown(tables.aggregate(runs))}')
  return '\n'.join(parts)


def _define_flags():
  """The command's flags; here, not at import (results/cifar100/run_table.py
  imports this module and has a --rows of its own)."""
  flags.DEFINE_bool(
      'stats', True, 'Plot the insertion point statistics (loads JAX, the '
      'checkpoints, the teacher and the test set).')
  flags.DEFINE_integer(
      'stats_examples', 500, 'Test images the statistics are averaged over.')
  flags.DEFINE_list(
      'paired_with', ['adain'], 'report.md compares each of these methods '
      '(comma-separated) with every other one, paired by seed, one table per '
      'method, with 95% confidence intervals; p-values Holm-adjusted within a '
      'table and, for several tables, times their number (\'\' = off).')
  flags.DEFINE_list(
      'rows', [], 'Only these methods (comma-separated row names) enter the '
      'report: its tables, its figure and its Holm families; empty = every '
      'method with a finished run.')
  flags.DEFINE_string(
      'name', 'report', 'Writes DIR/NAME.md and DIR/NAME.csv (and, unless '
      'NAME is report, NAME_accuracy_curves.png), so that a subset\'s report '
      'sits beside the full one.')
  flags.DEFINE_bool(
      'tensorboard', True, 'Write DIR/<method>/seed<k>/tb/ event files.')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(
        'Usage: python -m adain_kd_jax.experiments.report SWEEP_DIR')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  try:
    table = make_report(argv[1], stats=FLAGS.stats,
                        stats_examples=FLAGS.stats_examples,
                        tensorboard=FLAGS.tensorboard,
                        paired_with=FLAGS.paired_with,
                        methods=FLAGS.rows, name=FLAGS.name,
                        stats_strict=FLAGS['stats'].present and FLAGS.stats)
  except (FileNotFoundError, ReportInputError) as e:
    # One line on stderr, exit status 2: the directory is wrong, not the usage.
    from adain_kd_jax import cli
    cli.fail(e, argv)
  print(table)


def run():
  """The console script `adain-kd-report`."""
  _define_flags()
  from adain_kd_jax import cli
  cli.run(main)


if __name__ == '__main__':
  run()
