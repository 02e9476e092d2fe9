r"""Runs the published CIFAR-100 table and sets our numbers beside it.

  python results/cifar100/run_table.py --workdir=results/cifar100/runs \
      [--rows=wrn_40_2-wrn_16_2,resnet56-resnet20] [--methods=kd,dkd,adain] \
      [--seeds=0,1,2] [--parallel=4] [--set=device_data=True,steps_per_call=16] \
      [--toy] [--report_only]

Trains what results/cifar100/plan.py lists for the chosen rows (default:
every row), methods (default: plan.METHODS) and seeds (default 0, 1, 2) and
is unfinished (finished runs are skipped, stopped ones resume; teachers not
imported into teachers/cifar100/ are trained first), N at once
(adain_kd_jax/experiments/parallel.py). Then, for every row with finished runs:
WORKDIR/<row>/report.md (adain_kd_jax.experiments.report) and
WORKDIR/<row>/published.md (ours beside the published numbers of configs/cifar100_distill.py, at each
paper's epoch: last for the CRD table, best for DKD), and WORKDIR/table.md,
every row's published.md in the table's order. `--toy` is the campaign's
dry run (a few steps per run); with `--set=mock_data=64` it needs no data.
"""

import os
import sys

from absl import app
from absl import flags

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from adain_kd_jax.experiments import campaign
from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import parallel
from adain_kd_jax.experiments import published
from adain_kd_jax.experiments import report
from configs import cifar100_distill

PLAN = os.path.join(_HERE, 'plan.py')
TABLE_FILE = 'table.md'

FLAGS = flags.FLAGS


def _define_flags():
  """The command's flags; here, not at import (the tests import this file
  beside the sweep and the campaign, which define flags of the same names)."""
  flags.DEFINE_string('workdir', 'results/cifar100/runs',
                      'Runs go to WORKDIR/<row>/<method>/seed<k>.')
  flags.DEFINE_list('rows', [], 'teacher-student pairs (default: the whole '
                    'table), e.g. wrn_40_2-wrn_16_2.')
  flags.DEFINE_list('methods', [], 'Methods (default: the plan\'s).')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds.')
  flags.DEFINE_integer('parallel', 1, 'Runs at once.')
  flags.DEFINE_list('set', [], 'field=value overrides for every run.')
  flags.DEFINE_bool('toy', False, 'A few steps per run (a dry run).')
  flags.DEFINE_bool('report_only', False, 'Train nothing; write the reports '
                    'of what has finished.')


def parse_rows(names):
  """['wrn_40_2-wrn_16_2'] -> [('wrn_40_2', 'wrn_16_2')]; [] -> the table."""
  rows = []
  for name in names:
    teacher, sep, student = name.partition('-')
    if not (sep and teacher and student):
      raise app.UsageError(
          f'--rows item {name!r} is not teacher-student; use e.g. '
          '--rows=wrn_40_2-wrn_16_2.')
    rows.append((teacher, student))
  return rows or list(cifar100_distill.TABLE)


def train(workdir, rows, methods, seeds, sets, toy=False, parallel_runs=1):
  """Trains the unfinished runs of the selection; returns their status."""
  plan = campaign._load_module(PLAN)  # pylint: disable=protected-access
  runs = plan.get_plan(workdir, rows=rows, methods=methods, seeds=seeds)
  jobs = campaign.build_jobs(runs, workdir, sets, toy)
  return parallel.run_jobs(jobs, parallel_runs,
                           log=lambda line: print(line, flush=True))


def write_tables(workdir, rows, numbers=None):
  """Each row's report.md and published.md, and WORKDIR/table.md; returns
  table.md's text ('' when no row has a finished run)."""
  plan = campaign._load_module(PLAN)  # pylint: disable=protected-access
  numbers = cifar100_distill.PUBLISHED if numbers is None else numbers
  parts = []
  for row in rows:
    row_dir = os.path.join(workdir, plan.row_name(row))
    if not os.path.isdir(row_dir) or not finished_runs.collect(row_dir):
      continue
    report.make_report(row_dir, stats=False, tensorboard=False)
    parts.append(published.write_beside(
        row_dir, numbers.get(tuple(row), {}), at=cifar100_distill.PUBLISHED_AT,
        title=f'{row[0]} -> {row[1]}'))
  text = '\n'.join(parts)
  if parts:
    with open(os.path.join(workdir, TABLE_FILE), 'w') as f:
      f.write(text)
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  rows = parse_rows(FLAGS.rows)
  plan = campaign._load_module(PLAN)  # pylint: disable=protected-access
  methods = tuple(FLAGS.methods) or plan.METHODS
  seeds = tuple(int(s) for s in FLAGS.seeds)
  if not FLAGS.report_only:
    status = train(FLAGS.workdir, rows, methods, seeds,
                   campaign.parse_sets(FLAGS.set), FLAGS.toy,
                   FLAGS.parallel)
    failed = {d: s for d, s in status.items() if s.startswith('failed')}
    for run_dir, value in failed.items():
      print(f'  {run_dir}: {value}; see {run_dir}/log.txt', flush=True)
  text = write_tables(FLAGS.workdir, rows)
  print(text or 'No finished runs yet.', flush=True)
  if text:
    print(f'Wrote {os.path.join(FLAGS.workdir, TABLE_FILE)}', flush=True)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
