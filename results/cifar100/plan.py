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
and loss weights of each baseline), seeds 0, 1 and 2; an arm is a method
with fixed extra settings (`ARMS`). Every method of
`adain_kd_jax.methods.METHODS` has an arm, or its reason for having none in
`NO_ARM` (a test holds the two together); a pair the config check refuses for
a method (`REFUSED`) is left out of the plan, with the reason. The AdaIN arms are the ones the low-data
Fashion-MNIST benchmark left standing (results/fashion_mnist_lowdata): the
authors' released form (`adain_authors`) and its control `logit_mse`, the
two that decided its verdict, and `adain` at S, the form it did not rule
out (its S-1 forms were at the level of the student alone there). Their
weights are that benchmark's tuned ones, not tuned on CIFAR-100.
"""

import os

from adain_kd_jax.cli import resolve_path
from adain_kd_jax.experiments.parallel import PlannedRun

CELL = 'configs/cifar100_distill.py'
TEACHER_CELL = 'configs/cifar100_teacher.py'
# The arms: name -> (method, fixed overrides). The published baselines and
# the student alone run their config as it is; the AdaIN arms add settings.
ARMS = {
    'none': ('none', {}),
    'kd': ('kd', {}),
    'fitnet': ('fitnet', {}),
    'at': ('at', {}),
    'crd': ('crd', {}),
    'dkd': ('dkd', {}),
    # The student's logits against the teacher's (weight 1): the control
    # that AdaIN at S reduces to on a pooling + classifier tail.
    'logit_mse': ('logit_mse', {}),
    # AdaIN at S, squared error (the config's AdaIN default here).
    'adain': ('adain', {}),
    # The authors' released form: a connector ending in a ReLU, AdaIN at S
    # with the squared error plus the mean-statistics L2, weights 1 and 1.
    'adain_authors': ('adain', {'points': (0,), 'connector_relu': True,
                                'loss.adain': 1.0, 'loss.stat_mean': 1.0}),
    'adain_kd': ('adain_kd', {}),
    # The other baselines, each at its published recipe as the config
    # gives it.
    'stat_l2': ('stat_l2', {}),
    'vid': ('vid', {}),
    'sp': ('sp', {}),
    'cc': ('cc', {}),
    'rkd': ('rkd', {}),
    'pkt': ('pkt', {}),
    'nst': ('nst', {}),
    'dist': ('dist', {}),
    'ofd': ('ofd', {}),
    'reviewkd': ('reviewkd', {}),
    'srrl': ('srrl', {}),
    'kdsvd': ('kdsvd', {}),
    'simkd': ('simkd', {}),
    'dot': ('dot', {}),
    # The methods with a first phase (config.init_epochs, then the
    # distillation: the config trains them init_epochs + 240 epochs).
    'ab': ('ab', {}),
    'ft': ('ft', {}),
    'fsp': ('fsp', {}),
}
METHODS = tuple(ARMS)
# Methods of adain_kd_jax.methods.METHODS without an arm: method -> why.
NO_ARM = {}
# (method, teacher, student) triples the config check refuses -> why; their
# runs are not planned (tests/test_cifar100_table.py checks each is refused
# and every other one builds).
_NO_PRE_RELU = ("needs the student's maps before their final ReLU, which "
                'MobileNetV2 does not expose')
_WIDTHS = 'needs the same channel count at every stage of the two networks'
REFUSED = {
    **{(m, t, 'MobileNetV2'): f'{m.upper()} {_NO_PRE_RELU}'
       for m in ('ofd', 'ab') for t in ('vgg13', 'ResNet50')},
    **{(m, t, s): f'{m.upper()} {_WIDTHS}'
       for m in ('kdsvd', 'fsp')
       for t, s in (('wrn_40_2', 'wrn_40_1'), ('vgg13', 'MobileNetV2'),
                    ('ResNet50', 'MobileNetV2'), ('resnet32x4', 'ShuffleV1'),
                    ('resnet32x4', 'ShuffleV2'), ('wrn_40_2', 'ShuffleV1'))},
}
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
      for arm in methods:
        method, fixed = ARMS[arm]
        if (method, *row) in REFUSED:
          continue
        runs.append(PlannedRun(
            f'{row_name(row)}/{arm}/seed{seed}',
            f'{CELL}:teacher={row[0]},student={row[1]},method={method}',
            {**fixed, 'seed': seed},
            needs=() if method == 'none' else (teacher_dir(row[0]),)))
  return runs
