"""results/cifar100: the plan of the published table and run_table.py, end
to end on tfds mock data at toy size."""

import os

import pytest

from adain_kd_jax import methods
from adain_kd_jax.experiments import campaign
from adain_kd_jax.methods import objective
from configs import cifar100_distill
from tests.conftest import ROOT

# pylint: disable=protected-access
PLAN = campaign._load_module('results/cifar100/plan.py')
TABLE = campaign._load_module('results/cifar100/run_table.py')


def test_plan_is_every_row_method_and_seed_with_the_recipe():
  """Teachers not imported first, then 11 rows x 27 arms x 3 seeds less
  the pairs the config refuses, each the row's published config; only
  `none` starts without its teacher."""
  runs = PLAN.get_plan('w')
  teachers = [r for r in runs if r.name.startswith('teacher/')]
  rows = [r for r in runs if not r.name.startswith('teacher/')]
  assert {r.name for r in teachers} <= {
      f'teacher/{t}' for t, _ in cifar100_distill.TABLE}
  refused = sum((PLAN.ARMS[arm][0], *row) in PLAN.REFUSED
                for row in cifar100_distill.TABLE for arm in PLAN.METHODS)
  # OFD and AB on the two MobileNetV2 students; KDSVD and FSP on the six
  # pairs of unequal widths.
  assert refused == 16
  assert len(rows) == (len(cifar100_distill.TABLE) * len(PLAN.METHODS)
                       - refused) * 3 == 843
  names = {r.name for r in rows}
  assert 'vgg13-MobileNetV2/ofd/seed0' not in names
  assert 'vgg13-vgg8/ofd/seed0' in names
  run = next(r for r in rows if r.name == 'vgg13-MobileNetV2/dkd/seed2')
  assert run.config == ('configs/cifar100_distill.py:teacher=vgg13,'
                        'student=MobileNetV2,method=dkd')
  assert run.overrides == {'seed': 2}
  assert run.needs == ('teachers/cifar100/vgg13',)
  assert next(r for r in rows if r.name == 'vgg13-vgg8/none/seed0').needs == ()
  # The low-data benchmark's decisive arms are in the table: the authors'
  # form is an arm of adain with its settings, logit_mse a method.
  authors = next(r for r in rows if r.name == 'vgg13-vgg8/adain_authors/seed1')
  assert authors.config.endswith('method=adain')
  assert authors.overrides == {'points': (0,), 'connector_relu': True,
                               'loss.adain': 1.0, 'loss.stat_mean': 1.0,
                               'seed': 1}
  assert {'logit_mse', 'adain', 'adain_kd'} <= set(PLAN.METHODS)


def test_every_method_has_an_arm_or_a_reason():
  """Each method of METHODS runs in some arm of the plan or is in NO_ARM
  with its reason; every arm names a method that exists."""
  armed = {method for method, _ in PLAN.ARMS.values()}
  assert armed <= set(methods.METHODS)
  missing = set(methods.METHODS) - armed - set(PLAN.NO_ARM)
  assert not missing, f'methods with no arm and no reason: {missing}'
  assert all(isinstance(why, str) and why for why in PLAN.NO_ARM.values())
  assert not armed & set(PLAN.NO_ARM)


def test_refused_pairs_are_refused_by_the_config_and_no_other():
  """Each triple the plan leaves out is one the objective refuses, in one
  line naming the method; every other (method, row) of the plan builds."""
  for method, teacher, student in PLAN.REFUSED:
    config = cifar100_distill.get_config(
        f'teacher={teacher},student={student},method={method}')
    with pytest.raises(ValueError, match=f'(?i){method}'):
      objective.create(config, 100, (32, 32, 3), steps_per_epoch=782)
  for teacher, student in cifar100_distill.TABLE:
    for method in dict.fromkeys(m for m, _ in PLAN.ARMS.values()):
      if (method, teacher, student) not in PLAN.REFUSED:
        config = cifar100_distill.get_config(
            f'teacher={teacher},student={student},method={method}')
        objective.create(config, 100, (32, 32, 3), steps_per_epoch=782)


def test_docs_state_the_plans_size():
  """docs/cifar100.md states the plan's run count as the plan makes it."""
  runs = [r for r in PLAN.get_plan('w') if not r.name.startswith('teacher/')]
  with open(os.path.join(ROOT, 'docs', 'cifar100.md')) as f:
    doc = ' '.join(f.read().split())
  assert (f'the table is {len(runs)} such runs of different sizes (11 rows '
          f'x {len(PLAN.METHODS)} arms x 3 seeds') in doc


def test_bad_row_names_the_flag_and_the_fix():
  """A --rows item without a dash fails in one line saying the form."""
  try:
    TABLE.parse_rows(['wrn_40_2'])
  except Exception as e:  # pylint: disable=broad-except
    assert 'use e.g. --rows=wrn_40_2-wrn_16_2' in str(e)
  else:
    raise AssertionError('no error')
  assert TABLE.parse_rows([]) == list(cifar100_distill.TABLE)


def test_run_table_end_to_end_on_mock_data(tmp_path, monkeypatch):
  """One toy row, two methods, one seed: the teacher is trained (none is
  imported), both runs finish, and table.md sets them beside the row's
  published numbers."""
  # The runs on one device each, compiled without backend optimisations
  # (conftest.py's reason): the test's eight devices would slow them down.
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  workdir = str(tmp_path / 'runs')
  row = ('resnet8', 'resnet8')  # Small, so that it compiles fast.
  sets = {'mock_data': 64, 'num_train_steps': 2, 'checkpoint_every_steps': 2}
  status = TABLE.train(workdir, [row], ('none', 'kd'), (0,), sets, toy=True,
                       parallel_runs=2)
  assert sorted(status.values()) == ['finished'] * 3, status
  numbers = {row: {'teacher': 75.0, 'none': 70.0, 'kd': 72.0, 'dkd': 73.0}}
  text = TABLE.write_tables(workdir, [row], numbers)
  lines = text.splitlines()
  assert lines[0] == '## resnet8 -> resnet8'
  body = {line.split(' | ')[0][2:]: line.split(' | ') for line in lines[4:]}
  assert list(body) == ['teacher', 'none', 'kd', 'dkd']
  assert body['kd'][1] == '1' and body['kd'][4:6] == ['72.00', 'last']
  assert body['dkd'][1:6] == ['0', '-', '-', '73.00', 'best']
  for name in ('report.md', 'published.md'):
    assert os.path.isfile(os.path.join(workdir, 'resnet8-resnet8', name))
  with open(os.path.join(workdir, TABLE.TABLE_FILE)) as f:
    assert f.read() == text
