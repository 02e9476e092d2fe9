"""Every config builds on configs/default.py, parses, validates and traces."""

import glob
import importlib
import json
import os
import re

import ml_collections
import numpy as np
import pytest

from adain_kd_jax import methods
from adain_kd_jax.methods import objective
from adain_kd_jax.training import config_checks
from adain_kd_jax.training import run_record
from configs import cifar100_distill
from configs import cifar100_teacher
from configs import default
from configs import from_json
from configs import imagenet_distill
from configs import mock
from configs import smoke
from configs import teacher
from tests.conftest import ROOT
from tests.conftest import trace_loss

ROWS = cifar100_distill.TABLE


def _arg(t, s, m):
  return f'teacher={t},student={s},method={m}'


@pytest.mark.parametrize('method', list(methods.METHODS))
def test_every_method_parses_on_the_first_row(method):
  """get_config(teacher=..,student=..,method=..) for each method."""
  config = cifar100_distill.get_config(_arg('wrn_40_2', 'wrn_16_2', method))
  config_checks.check(config)
  assert (config.method, config.model, config.teacher) == (
      method, 'wrn_16_2', 'wrn_40_2')
  assert config.teacher_checkpoint == 'teachers/cifar100/wrn_40_2'
  objective.create(config, 100, (32, 32, 3))


@pytest.mark.parametrize('method', ['adain', 'at', 'fitnet', 'vid'])
@pytest.mark.parametrize('row', ROWS, ids=['-'.join(r) for r in ROWS])
def test_table_row_traces(row, method):
  """The loss of each row traces: connector, AT, VID and tail shapes agree."""
  config = cifar100_distill.get_config(_arg(*row, method))
  config_checks.check(config)
  d = objective.create(config, 100, (32, 32, 3))
  _, loss = trace_loss(d, (32, 32, 3))
  assert loss.shape == ()


def test_recipe_matches_the_benchmark():
  """Batch 64, 240 epochs, lr 0.05 / 0.01, decay at 150/180/210, wd 5e-4."""
  config = cifar100_distill.get_config(_arg('resnet56', 'resnet20', 'kd'))
  assert (config.batch_size, config.num_epochs, config.learning_rate,
          tuple(config.decay_epochs), config.weight_decay,
          config.schedule) == (64, 240.0, 0.05, (150, 180, 210), 5e-4,
                               'piecewise')
  assert (config.loss.ce, config.loss.kd) == (0.1, 0.9)
  low = cifar100_distill.get_config(_arg('vgg13', 'MobileNetV2', 'crd'))
  assert low.learning_rate == 0.01 and low.loss.crd == 0.8
  assert low.points == (0,)  # S: stage 4 of the 4-stage MobileNetV2.
  low.method = 'adain'
  assert objective.create(low, 100, (32, 32, 3)).term['adain'].points == (4,)
  adain = cifar100_distill.get_config(_arg('vgg13', 'vgg8', 'adain'))
  adain_kd = cifar100_distill.get_config(_arg('vgg13', 'vgg8', 'adain_kd'))
  assert (adain.loss.adain, adain_kd.loss.adain) == (1.0, 0.03)
  assert cifar100_distill.get_config(_arg('vgg13', 'vgg8',
                                          'fitnet')).points == (2,)


def test_first_phases_follow_repdistiller():
  """30 epochs of first phase before the 240 (FSP, AB, FT); FT's phase at
  lr 0.01 for a resnet or wrn student and at the run's lr for the others
  (RepDistiller's helper/pretrain.py); FSP's and AB's at the run's lr."""
  ft = cifar100_distill.get_config(_arg('wrn_40_2', 'wrn_16_2', 'ft'))
  assert (ft.init_epochs, ft.num_epochs, ft.learning_rate,
          ft.init_learning_rate) == (30.0, 270.0, 0.05, 0.01)
  for args in (('vgg13', 'vgg8', 'ft'), ('vgg13', 'MobileNetV2', 'ft'),
               ('wrn_40_2', 'wrn_16_2', 'fsp'),
               ('resnet32x4', 'resnet8x4', 'ab')):
    config = cifar100_distill.get_config(_arg(*args))
    assert config.num_epochs == 270.0 and config.init_learning_rate == 0, args
  assert cifar100_distill.get_config(
      _arg('wrn_40_2', 'wrn_16_2', 'kd')).num_epochs == 240.0


def test_bad_config_argument():
  """An unknown key in the config argument names the valid ones."""
  with pytest.raises(ValueError, match=r"there is no argument 'studnet'; its "
                     r'arguments are teacher, student, method'):
    cifar100_distill.get_config('teacher=wrn_40_2,studnet=wrn_16_2')


def test_other_configs_validate():
  """default, smoke, teacher and the CIFAR-100 teacher configs are valid."""
  for config in (default.get_config(), smoke.get_config(),
                 teacher.get_config(),
                 cifar100_teacher.get_config('model=resnet110')):
    config_checks.check(config)
  assert cifar100_teacher.get_config('model=resnet110').model == 'resnet110'
  assert np.isclose(default.get_config().loss.adain, 0.3)


def test_imagenet_config_is_the_published_recipe():
  """ResNet-34 -> ResNet-18, 100 epochs, lr 0.1 per 256, decay 30/60/90."""
  from configs import imagenet_distill  # pylint: disable=g-import-not-at-top
  config = imagenet_distill.get_config('method=dkd')
  config_checks.check(config)
  assert (config.teacher, config.model, config.dataset) == (
      'resnet34', 'resnet18', 'imagenet2012')
  assert (config.num_epochs, config.learning_rate, config.weight_decay,
          tuple(config.decay_epochs), config.batch_size) == (
              100.0, 0.1, 1e-4, (30, 60, 90), 256)
  objective.create(config, 1000, (224, 224, 3))


# DKD's beta per pair of the table, as mdistiller's configs/cifar100/dkd/*.yaml
# set it (written out here, independently of the config's own table).
PUBLISHED_DKD_BETA = {
    ('wrn_40_2', 'wrn_16_2'): 6.0, ('wrn_40_2', 'wrn_40_1'): 6.0,
    ('resnet56', 'resnet20'): 2.0, ('resnet110', 'resnet32'): 2.0,
    ('resnet32x4', 'resnet8x4'): 8.0, ('vgg13', 'vgg8'): 6.0,
    ('vgg13', 'MobileNetV2'): 6.0, ('ResNet50', 'MobileNetV2'): 8.0,
    ('resnet32x4', 'ShuffleV1'): 8.0, ('resnet32x4', 'ShuffleV2'): 8.0,
    ('wrn_40_2', 'ShuffleV1'): 8.0,
}


@pytest.mark.parametrize('row', ROWS, ids=['-'.join(r) for r in ROWS])
def test_dkd_beta_is_mdistillers_for_every_row(row):
  """beta 2 / 6 / 8 per pair, alpha 1, T 4, warm-up 20; wired into DKD."""
  assert set(PUBLISHED_DKD_BETA) == set(ROWS)
  config = cifar100_distill.get_config(_arg(*row, 'dkd'))
  config_checks.check(config)
  assert config.dkd.beta == PUBLISHED_DKD_BETA[row]
  assert (config.dkd.alpha, config.dkd.warmup_epochs, config.loss.temperature,
          config.loss.ce, config.loss.dkd) == (1.0, 20.0, 4.0, 1.0, 1.0)
  d = objective.create(config, 100, (32, 32, 3))
  dkd = d.term['dkd']
  assert (dkd.beta, dkd.alpha, dkd.warmup_epochs, dkd.temperature) == (
      PUBLISHED_DKD_BETA[row], 1.0, 20.0, 4.0)


def test_dkd_beta_is_8_off_the_table():
  """A pair mdistiller has no config for gets its default beta, 8."""
  config = cifar100_distill.get_config(_arg('resnet110', 'resnet20', 'dkd'))
  assert config.dkd.beta == 8.0


@pytest.mark.parametrize('row', ROWS, ids=['-'.join(r) for r in ROWS])
def test_adain_kd_weights_ce_and_kd_as_kd(row):
  """CIFAR-100: CE 0.1 + KD 0.9 (tau 4) for both kd and adain_kd."""
  kd = cifar100_distill.get_config(_arg(*row, 'kd'))
  adain_kd = cifar100_distill.get_config(_arg(*row, 'adain_kd'))
  for config in (kd, adain_kd):
    assert (config.loss.ce, config.loss.kd, config.loss.temperature) == (
        0.1, 0.9, 4.0)
  d_kd = objective.create(kd, 100, (32, 32, 3))
  d_adain_kd = objective.create(adain_kd, 100, (32, 32, 3))
  for term in ('ce', 'kd'):
    assert d_kd.weights[term] == d_adain_kd.weights[term]
  assert d_kd.term['kd'] == d_adain_kd.term['kd']  # The same temperature.
  # The only extra term of adain_kd is AdaIN's (fm is off).
  assert set(d_adain_kd.term) - set(d_kd.term) == {'adain'}


def test_imagenet_kd_dkd_and_adain_kd_are_mdistillers():
  """KD: T 1, CE 0.5 + KD 0.5 (also adain_kd); DKD: beta 0.5, T 1, warm-up 1."""
  from configs import imagenet_distill  # pylint: disable=g-import-not-at-top
  kd = imagenet_distill.get_config('method=kd')
  adain_kd = imagenet_distill.get_config('method=adain_kd')
  dkd = imagenet_distill.get_config('method=dkd')
  for config in (kd, adain_kd, dkd):
    config_checks.check(config)
  for config in (kd, adain_kd):
    assert (config.loss.ce, config.loss.kd, config.loss.temperature) == (
        0.5, 0.5, 1.0)
  assert (dkd.dkd.beta, dkd.dkd.alpha, dkd.dkd.warmup_epochs,
          dkd.loss.temperature, dkd.loss.ce, dkd.loss.dkd) == (
              0.5, 1.0, 1.0, 1.0, 1.0, 1.0)
  d = objective.create(dkd, 1000, (224, 224, 3)).term['dkd']
  assert (d.beta, d.alpha, d.warmup_epochs, d.temperature) == (
      0.5, 1.0, 1.0, 1.0)
  assert objective.create(kd, 1000,
                        (224, 224, 3)).term['kd'].temperature == 1.0
  assert '70.66' in imagenet_distill.__doc__


def test_published_tables_say_their_convention():
  """CRD table: last epoch; DKD's: best test epoch, next to each table."""
  from configs import imagenet_distill  # pylint: disable=g-import-not-at-top

  def says(doc, source, convention):
    doc = ' '.join(doc.split())  # Line breaks as spaces.
    start = doc.index(source)
    return convention in doc[start:start + 300]

  doc = cifar100_distill.__doc__
  assert says(doc, 'the CRD table', 'LAST epoch')
  assert says(doc, 'the DKD table', 'BEST test epoch')
  doc = imagenet_distill.__doc__
  assert says(doc, "the CRD paper's ImageNet table", 'LAST epoch')
  assert says(doc, "the DKD paper's ImageNet table", 'BEST test epoch')


def test_published_constants_are_the_docs_table():
  """PUBLISHED_SOURCES holds docs/cifar100.md's published table, number for
  number, source and epoch included, and PUBLISHED its numbers by row."""
  with open(os.path.join(ROOT, 'docs', 'cifar100.md')) as f:
    doc = f.read().split('## The published numbers', 1)[1]
  lines = [[c.strip() for c in line.strip().strip('|').split('|')]
           for line in doc.splitlines() if line.startswith('| ')]
  header, rows = lines[0], lines[1:]
  assert [tuple(c.split(' -> ')) for c in header[3:]] == list(
      cifar100_distill.TABLE)
  in_docs = {cells[0]: (cells[1], cells[2], tuple(
      None if c == '-' else float(c) for c in cells[3:]))
             for cells in rows}
  in_config = {m: (source, at, values)
               for source, (block, at) in
               cifar100_distill.PUBLISHED_SOURCES.items()
               for m, values in block.items()}
  assert in_docs == in_config
  for i, row in enumerate(cifar100_distill.TABLE):
    assert cifar100_distill.PUBLISHED[row] == {
        m: values[i] for m, (_, _, values) in in_docs.items()
        if values[i] is not None}


def test_fashion_mnist_benchmark_recipe():
  """The Fashion-MNIST benchmark cell: validation split, 30 epochs, the
  published method weights, DKD's warm-up scaled to the schedule."""
  from configs import fashion_mnist_distill  # pylint: disable=g-import-not-at-top
  kd = fashion_mnist_distill.get_config('method=kd')
  adain_kd = fashion_mnist_distill.get_config('method=adain_kd')
  assert (kd.holdout, kd.num_epochs, kd.batch_size) == (5000, 30.0, 128)
  assert (kd.model, kd.teacher) == ('resnet8', 'wrn_40_2')
  assert kd.teacher_checkpoint == 'teachers/fashion_mnist_wrn_40_2'
  for key in ('ce', 'kd', 'temperature'):
    assert adain_kd.loss[key] == kd.loss[key]
  assert (kd.loss.ce, kd.loss.kd, kd.loss.temperature) == (0.1, 0.9, 4.0)
  dkd = fashion_mnist_distill.get_config(
      'teacher=resnet56,student=resnet20,method=dkd')
  assert dkd.dkd.beta == 2.0
  assert dkd.dkd.warmup_epochs == 20.0 * 30.0 / 240.0
  fitnet = fashion_mnist_distill.get_config('method=fitnet')
  assert (fitnet.points, fitnet.loss.fitnet) == ((2,), 100.0)
  assert fashion_mnist_distill.get_config(
      'student=ShuffleV1').learning_rate == 0.01
  assert kd.learning_rate == 0.05
  with pytest.raises(ValueError, match="Bad config argument 'pair=x' for "
                     'configs/fashion_mnist_distill.py'):
    fashion_mnist_distill.get_config('pair=x')


def test_fashion_mnist_lowdata_recipe():
  """The CPU benchmark cell: the fixed split, 500 images per class, the
  55k teacher, the benchmark's recipe and DKD's warm-up at its length."""
  from configs import fashion_mnist_lowdata  # pylint: disable=g-import-not-at-top
  kd = fashion_mnist_lowdata.get_config()
  assert (kd.holdout, kd.holdout_seed, kd.train_per_class) == (5000, 0, 500)
  assert (kd.model, kd.teacher, kd.method) == ('resnet8', 'resnet20', 'kd')
  assert kd.teacher_checkpoint == 'teachers/fashion_mnist_resnet20_55k'
  assert (kd.loss.ce, kd.loss.kd, kd.learning_rate) == (0.1, 0.9, 0.05)
  n = fashion_mnist_lowdata.NUM_EPOCHS
  assert kd.num_epochs == n and kd.dkd.warmup_epochs == 20.0 * n / 240.0


def test_fashion_mnist_teacher_recipe():
  from configs import fashion_mnist_teacher  # pylint: disable=g-import-not-at-top
  config = fashion_mnist_teacher.get_config('resnet56')
  assert (config.model, config.method, config.export) == (
      'resnet56', 'none', True)
  assert (config.num_epochs, config.batch_size, config.holdout,
          config.holdout_seed) == (40.0, 256, 5000, 0)
  assert fashion_mnist_teacher.get_config('model=resnet56').model == 'resnet56'
  assert fashion_mnist_teacher.get_config().model == 'wrn_40_2'


@pytest.mark.parametrize('arg,base', [
    ('cifar100_distill,teacher=wrn_40_2,student=wrn_16_2,method=adain',
     cifar100_distill.get_config(_arg('wrn_40_2', 'wrn_16_2', 'adain'))),
    ('imagenet_distill,method=kd', imagenet_distill.get_config('method=kd')),
])
def test_mock_config_keeps_the_recipe_on_mock_data(arg, base):
  """configs/mock.py: the named config's model and loss, on mock data."""
  config = mock.get_config(arg)
  config_checks.check(config)
  for field in ('model', 'teacher', 'method', 'points', 'learning_rate',
                'schedule', 'teacher_checkpoint'):
    assert config[field] == base[field], field
  assert config.loss.to_dict() == base.loss.to_dict()
  assert config.mock_data == 64 and config.data_source == 'tfds'
  assert config.num_train_steps == 4 and config.batch_size == 16
  if 'image_size' in base:
    assert config.image_size == 64 and not config.decode_in_workers


def test_mock_config_names_an_unknown_base():
  with pytest.raises(ValueError, match='there is no configs/cifar1000.py'):
    mock.get_config('cifar1000')


# Every config file of configs/ with the arguments it is typically given
# (None: get_config() without one). from_json.py is tested on its own below.
TYPICAL_ARGS = {
    'default': [None],
    'smoke': [None],
    'teacher': [None],
    'cifar100_distill': [None] + [_arg(t, s, m) for t, s in ROWS[:3]
                                  for m in ('adain', 'fitnet', 'dkd')],
    'cifar100_teacher': [None, 'model=resnet110'],
    'fashion_mnist_distill': [None, 'method=fitnet',
                              _arg('resnet56', 'resnet20', 'dkd')],
    'fashion_mnist_teacher': [None, 'resnet56'],
    'fashion_mnist_lowdata': [None, 'student=wrn_16_1,method=adain',
                              'method=crd'],
    'imagenet_distill': [None, 'method=kd', 'method=dkd'],
    'mock': ['cifar100_distill,method=crd', 'imagenet_distill,method=kd'],
}
# Declared by the `# --- Data ---` section of configs/default.py on the data
# branch (image_size, num_workers, decode_in_workers of the streamed
# imagenet2012); until then only imagenet_distill.py (and mock.py over it)
# sets them. Remove this once default.py declares them.
DATA_KEYS_PENDING = frozenset({'image_size', 'num_workers',
                               'decode_in_workers'})
_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                           'configs')


def _paths(tree, prefix=''):
  """Every key of a nested dict as a dotted path ('loss.adain', ...)."""
  paths = set()
  for key, value in tree.items():
    paths.add(prefix + key)
    if isinstance(value, dict):
      paths |= _paths(value, f'{prefix}{key}.')
  return paths


def _undeclared(config):
  """The keys of `config` that configs/default.py does not declare."""
  declared = _paths(default.get_config().to_dict())
  return sorted(_paths(config.to_dict()) - declared - DATA_KEYS_PENDING)


def test_every_config_file_has_typical_arguments():
  """A new configs/*.py with get_config is added to TYPICAL_ARGS."""
  names = {os.path.basename(p)[:-3]
           for p in glob.glob(os.path.join(_CONFIG_DIR, '*.py'))}
  without = {'__init__', 'config_args', 'from_json'}
  assert names - without == set(TYPICAL_ARGS)


@pytest.mark.parametrize('name,arg', [
    (name, arg) for name, args in TYPICAL_ARGS.items() for arg in args])
def test_config_declares_no_key_default_lacks(name, arg):
  """Every config builds on default.py's keys, and it validates."""
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config() if arg is None else module.get_config(arg)
  assert not _undeclared(config), (
      f'configs/{name}.py:{arg} sets keys configs/default.py lacks')
  config_checks.check(config)


def test_from_json_round_trips_a_recorded_config(tmp_path):
  """configs/from_json.py gives back the recorded config, tuples and all."""
  recorded = mock.get_config('cifar100_distill,method=adain')
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(recorded.to_dict()))
  config = from_json.get_config(str(path))
  assert config.to_dict() == recorded.to_dict()
  assert not _undeclared(config)


def test_from_json_gives_an_older_recording_what_it_ran_under(tmp_path):
  """A config.json written before the fixed split and AdaIN's own settings
  comes back with the values that reproduce it: the split of the run's own
  seed, AdaIN at KD's temperature, no warm-up, no stat_mean, no ReLU."""
  recorded = default.get_config().to_dict()
  recorded['loss']['temperature'] = 2.0
  for field in run_record.OLDER_RUNS:
    *parents, leaf = field.split('.')
    node = recorded
    for part in parents:
      node = node[part]
    del node[leaf]
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(recorded))
  config = from_json.get_config(str(path))
  assert (config.holdout_seed, config.train_per_class,
          config.connector_relu) == (-1, 0, False)
  assert (config.loss.adain_temperature, config.loss.adain_warmup_epochs,
          config.loss.stat_mean) == (2.0, 0.0, 0.0)
  assert not _undeclared(config)
  config_checks.check(config)


def test_every_default_key_has_a_comment():
  """Each `config.x = ...` of default.py has a comment beside or above it."""
  with open(os.path.join(_CONFIG_DIR, 'default.py')) as f:
    lines = f.read().splitlines()
  bare = []
  for i, line in enumerate(lines):
    match = re.match(r'\s*(config\.[\w.]+) = ', line)
    if match and '  # ' not in line and not lines[i - 1].lstrip().startswith(
        '#'):
      bare.append(match.group(1))
  assert not bare
  assert len(_paths(default.get_config().to_dict())) > 60


def test_every_settings_group_of_the_default_config_is_a_terms_own():
  """The default config's groups besides config.loss are exactly the
  settings groups that terms declare, and every declared field exists."""
  config = default.get_config()
  groups = {k for k, v in config.items()
            if isinstance(v, ml_collections.ConfigDict)} - {'loss'}
  declared = set(methods.SETTING_FIELDS)
  assert groups == {f for f in declared
                    if isinstance(config[f], ml_collections.ConfigDict)}
  assert all(f in config for f in declared)
