"""Every run of the published CIFAR-100 table, every method, its recipe.

  python -m adain_kd_jax.experiments.campaign --plan=results/cifar100/plan.py \
      --workdir=results/cifar100/runs [--only=wrn_40_2-wrn_16_2/] [--list]

(`results/cifar100/run_table.py` runs a selection of it and writes the
tables beside the published numbers.) Names are directories under the
workdir:
  <teacher>-<student>/<method>/seed<k>  one row of the table
                                 (configs/cifar100_distill.py's TABLE), each
                                 a sweep directory that
                                 `python -m adain_kd_jax.experiments.report`
                                 reads;
  teacher/<model>                only where teachers/cifar100/<model> holds
                                 no export (none imported): the teacher
                                 trained with the same recipe
                                 (configs/cifar100_teacher.py), exported
                                 there.
Every run is configs/cifar100_distill.py as it stands (the published recipe
and loss weights of each baseline), seeds 0, 1 and 2.
"""

import os

from adain_kd_jax.cli import resolve_path
from adain_kd_jax.experiments.parallel import PlannedRun

CELL = 'configs/cifar100_distill.py'
TEACHER_CELL = 'configs/cifar100_teacher.py'
# The published baselines, the student alone and ours.
METHODS = ('none', 'kd', 'fitnet', 'at', 'crd', 'dkd', 'adain', 'adain_kd')
SEEDS = (0, 1, 2)


def _rows():
  from configs import cifar100_distill  # pylint: disable=g-import-not-at-top
  return cifar100_distill.TABLE


def teacher_dir(teacher):
  return f'teachers/cifar100/{teacher}'


def row_name(row):
  """'wrn_40_2-wrn_16_2' for ('wrn_40_2', 'wrn_16_2')."""
  return f'{row[0]}-{row[1]}'


def get_plan(workdir, rows=None, methods=METHODS, seeds=SEEDS):
  """Teachers that are not there yet, then the rows in the table's order,
  seed by seed (a first seed of every method before the second)."""
  del workdir  # Nothing here depends on earlier results.
  rows = _rows() if rows is None else rows
  runs = []
  for teacher in dict.fromkeys(t for t, _ in rows):
    if not os.path.isdir(resolve_path(teacher_dir(teacher))):
      runs.append(PlannedRun(f'teacher/{teacher}',
                             f'{TEACHER_CELL}:model={teacher}',
                             export_to=teacher_dir(teacher)))
  for row in rows:
    for seed in seeds:
      for method in methods:
        runs.append(PlannedRun(
            f'{row_name(row)}/{method}/seed{seed}',
            f'{CELL}:teacher={row[0]},student={row[1]},method={method}',
            {'seed': seed},
            needs=() if method == 'none' else (teacher_dir(row[0]),)))
  return runs
