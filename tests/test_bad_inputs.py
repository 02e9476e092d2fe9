"""The bad-input table: each bad config or input fails with a one-line error
that names the field and the fix, before anything is compiled or written."""

import os
import shutil

import numpy as np
import pytest

from adain_kd_jax import cli
from adain_kd_jax.data import idx
from adain_kd_jax.data import loader
from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import loop
from adain_kd_jax.training import preflight
from adain_kd_jax.training import run as run_lib
from configs import smoke
from tests.conftest import idx_smoke_config
from tests.conftest import make_teacher_variables
from tests.conftest import run_train_py


class _Reached(Exception):
  """Raised if a run gets as far as its checkpointer, past every check."""


@pytest.fixture(name='no_compile')
def _no_compile(monkeypatch):
  """A run with a workdir stops at its checkpointer: after the checks and
  before anything compiles (the jitted steps are built earlier, in
  `step_builder.build_step`, but compile only on their first call)."""
  def fail(*args, **kwargs):
    raise _Reached('got past the checks')
  monkeypatch.setattr(run_lib.checkpoints, 'RunCheckpointer', fail)


@pytest.fixture(scope='module')
def resnet14_teacher(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('r14') / 'export')
  checkpoints.save_teacher(
      directory, make_teacher_variables('resnet14'),
      {'model': 'resnet14', 'num_classes': 10}, step=1)
  return directory


@pytest.fixture(scope='module')
def bad_label_dir(tmp_path_factory, idx_data_dir):
  """IDX files whose training labels go up to 12 in a 10-class data set."""
  directory = tmp_path_factory.mktemp('badlabels')
  for name in os.listdir(idx_data_dir):
    shutil.copy(os.path.join(idx_data_dir, name), directory)
  labels = np.arange(256, dtype=np.uint8) % 13
  idx.write_idx(str(directory / 'train-labels-idx1-ubyte.gz'), labels)
  return str(directory)


@pytest.fixture(scope='module')
def train_only_dir(tmp_path_factory, idx_data_dir):
  """A data directory without the test split."""
  directory = tmp_path_factory.mktemp('trainonly')
  for name in os.listdir(idx_data_dir):
    if name.startswith('train'):
      shutil.copy(os.path.join(idx_data_dir, name), directory)
  return str(directory)


def _config(idx_data_dir, teacher_export):
  return idx_smoke_config(idx_data_dir, teacher_export)


# A streamed data set (imagenet2012 from tfds).
_IMAGENET = {'dataset': 'imagenet2012', 'data_source': 'tfds'}
# (id, overrides, exception, regex). Fields may be dotted ('loss.adain');
# values starting with '@' name a fixture.
CASES = [
    ('unknown_model', {'model': 'resnet9'}, ValueError,
     r"config.model='resnet9' is invalid: use one of .*resnet8"),
    ('unknown_teacher', {'teacher': 'wrn_10_10'}, ValueError,
     r"config.teacher='wrn_10_10' is invalid: use one of"),
    ('unknown_method', {'method': 'adian'}, ValueError,
     r"Unknown method 'adian' \(config.method\). Valid methods: .*adain_kd"
     r".*\. Did you mean 'adain'\?$"),
    ('nan_loss_weight', {'loss.adain': float('nan')}, ValueError,
     r"config.loss.adain=nan is invalid: it must be a finite number"),
    ('infinite_loss_weight', {'loss.kd': float('inf')}, ValueError,
     r"config.loss.kd=inf is invalid: it must be a finite number"),
    ('misspelt_model', {'model': 'resnet_8'}, ValueError,
     r"config.model='resnet_8' is invalid: use one of .*\. Did you mean "
     r"'resnet8'\?$"),
    ('misspelt_teacher', {'teacher': 'wrn40_2'}, ValueError,
     r"config.teacher='wrn40_2' is invalid: .* Did you mean 'wrn_40_2'\?$"),
    ('unknown_dataset', {'dataset': 'cifar1000'}, ValueError,
     r"config.dataset='cifar1000' is invalid: use one of .*cifar100"),
    ('unknown_source', {'data_source': 'hdf5'}, ValueError,
     r"config.data_source='hdf5' is invalid: use one of 'idx', 'tfds'"),
    ('zero_batch', {'batch_size': 0}, ValueError,
     r'config.batch_size=0 is invalid: it must be a positive integer'),
    ('negative_batch', {'batch_size': -16}, ValueError,
     r'config.batch_size=-16 is invalid: it must be a positive integer'),
    ('batch_not_divisible', {'batch_size': 12}, ValueError,
     r'config.batch_size=12 is not divisible by the 8 devices; use a '
     r'multiple of 8'),
    ('eval_batch_not_divisible', {'eval_batch_size': 20}, ValueError,
     r'config.eval_batch_size=20 is not divisible by the 8 devices'),
    ('batch_larger_than_data', {'batch_size': 512}, ValueError,
     r'config.batch_size=512 is larger than the 256 training examples'),
    ('point_too_large', {'points': (4,)}, ValueError,
     r'config.points has stage 4, outside 1..3 .*use a stage number'),
    ('point_before_stage_1', {'points': (-3,)}, ValueError,
     r'config.points has stage -3, outside 1..3 \(or -2..0 counted from '
     r'the last stage\)'),
    ('point_weights_length', {'point_weights': (1.0, 0.5)}, ValueError,
     r'config.points=\(3,\) and config.point_weights=\(1.0, 0.5\) must be '
     r'non-empty and of the same length'),
    ('teacher_of_another_arch', {'teacher': 'resnet20'}, ValueError,
     r"is a 'resnet8' but config.teacher is 'resnet20': set "
     r'--config.teacher=resnet8'),
    ('teacher_export_of_resnet14',
     {'teacher_checkpoint': '@resnet14_teacher'},
     ValueError, r"is a 'resnet14' but config.teacher is 'resnet8'"),
    ('missing_teacher', {'teacher_checkpoint': '/nonexistent/teacher'},
     FileNotFoundError, r"No teacher checkpoint at '/nonexistent/teacher'.*"
     r'configs/teacher.py'),
    ('no_teacher_checkpoint', {'teacher_checkpoint': ''}, ValueError,
     r"config.teacher_checkpoint='' is invalid: method 'adain' needs an "
     r'exported teacher'),
    ('negative_lr', {'learning_rate': -0.1}, ValueError,
     r'config.learning_rate=-0.1 is invalid: it must be > 0'),
    ('momentum_too_large', {'momentum': 1.5}, ValueError,
     r'config.momentum=1.5 is invalid: it must be in \[0, 1\)'),
    ('negative_weight_decay', {'weight_decay': -1e-4}, ValueError,
     r'config.weight_decay=-0.0001 is invalid: it must be >= 0'),
    ('unknown_schedule', {'schedule': 'linear'}, ValueError,
     r"config.schedule='linear' is invalid: use one of 'cosine', "
     r"'piecewise'"),
    ('unknown_adain_kind', {'loss.adain_kind': 'l1'}, ValueError,
     r"config.loss.adain_kind='l1' is invalid: use one of 'mse', 'kl', 'ce'"),
    ('unknown_adain_stats', {'loss.adain_stats': 'var'}, ValueError,
     r"config.loss.adain_stats='var' is invalid: use one of 'both', 'mean'"),
    ('zero_temperature', {'loss.temperature': 0.0}, ValueError,
     r'config.loss.temperature=0.0 is invalid: it must be > 0'),
    ('unknown_dtype', {'dtype': 'int8'}, ValueError,
     r"config.dtype='int8' is invalid: use one of 'float32', 'bfloat16'"),
    ('no_training_length', {'num_epochs': 0.0, 'num_train_steps': -1},
     ValueError, r'config.num_epochs=0.0 is invalid: set a positive'),
    ('negative_padding', {'crop_padding': -1}, ValueError,
     r'config.crop_padding=-1 is invalid: it must be >= 0'),
    ('holdout_too_large', {'holdout': 256}, ValueError,
     r'config.holdout=256 is invalid: it must be smaller than the 256 '
     r'training examples'),
    ('holdout_seed_below_minus_one', {'holdout_seed': -2}, ValueError,
     r'config.holdout_seed=-2 is invalid: use an int >= 0 \(or -1 for'),
    ('negative_train_per_class', {'train_per_class': -5}, ValueError,
     r'config.train_per_class=-5 is invalid: it must be >= 0'),
    ('train_per_class_too_large', {'train_per_class': 30}, ValueError,
     r'config.train_per_class=30 is invalid: class \d has only \d+ '
     r'training examples'),
    ('zero_adain_temperature', {'loss.adain_temperature': 0.0}, ValueError,
     r'config.loss.adain_temperature=0.0 is invalid: it must be > 0'),
    ('negative_adain_warmup', {'loss.adain_warmup_epochs': -1.0}, ValueError,
     r'config.loss.adain_warmup_epochs=-1.0 is invalid: it must be >= 0'),
    ('unknown_compare_method', {'compare_to': 'nope'}, ValueError,
     r"Unknown method 'nope' \(config.compare_to\). Valid methods: "),
    ('labels_out_of_range', {'data_dir': '@bad_label_dir'}, ValueError,
     r'fashion_mnist train: labels must be in \[0, 10\), found 0..12; is '
     r'config.dataset right'),
    ('data_dir_without_test_split', {'data_dir': '@train_only_dir'},
     FileNotFoundError, r't10k-images-idx3-ubyte'),
    ('missing_data_dir', {'data_dir': '/nonexistent/data'}, FileNotFoundError,
     r"looked in: \['/nonexistent/data'.*Set config.data_dir "
     r'\(--config.data_dir=DIR\)'),
    ('idx_source_for_cifar', {'dataset': 'cifar100'}, ValueError,
     r"config.data_source='idx' is invalid: config.dataset='cifar100' has "
     r'no IDX files .*use --config.data_source=tfds'),
    ('points_not_numbers', {'points': ('(3,x)',)}, ValueError,
     r"config.points=\('\(3,x\)',\) is invalid: use a tuple of stage "
     r'numbers'),
    ('mock_data_needs_tfds', {'mock_data': 16}, ValueError,
     r"config.data_source='idx' is invalid: config.mock_data replaces tfds"),
    ('negative_mock_data', {'mock_data': -1}, ValueError,
     r'config.mock_data=-1 is invalid: use a number of examples'),
    ('points_not_integers', {'points': (2.5,)}, ValueError,
     r'config.points=\(2.5,\) is invalid: use a tuple of stage numbers'),
    ('no_points_for_adain', {'points': (), 'point_weights': ()}, ValueError,
     r'config.points=\(\) and config.point_weights=\(\) must be non-empty'),
    ('negative_train_limit', {'train_limit': -5}, ValueError,
     r'config.train_limit=-5 is invalid: it must be >= 0'),
    ('negative_num_workers', {'num_workers': -1}, ValueError,
     r'config.num_workers=-1 is invalid: it must be >= 0'),
    ('negative_warmup', {'warmup_epochs': -1.0}, ValueError,
     r'config.warmup_epochs=-1.0 is invalid: it must be >= 0'),
    ('no_crd_negatives', {'crd.num_negatives': 0}, ValueError,
     r'config.crd.num_negatives=0 is invalid: it must be >= 1'),
    ('zero_crd_temperature', {'crd.temperature': 0.0}, ValueError,
     r'config.crd.temperature=0.0 is invalid: it must be > 0'),
    ('crd_momentum_too_large', {'crd.momentum': 1.5}, ValueError,
     r'config.crd.momentum=1.5 is invalid: it must be in \[0, 1\]'),
    ('holdout_of_streamed_data', dict(_IMAGENET, holdout=100), ValueError,
     r'config.holdout=100 is invalid for imagenet2012: it is for the '
     r'in-memory data sets; set it to 0/False'),
    ('device_data_of_streamed_data', dict(_IMAGENET, device_data=True),
     ValueError, r'config.device_data=True is invalid for imagenet2012: it is '
     r'for the in-memory data sets'),
    ('class_aware_crd_of_streamed_data', dict(_IMAGENET, method='crd'),
     ValueError, r'config.crd.class_aware=True is invalid: it needs every '
     r'training label .*--config.crd.class_aware=False'),
]


@pytest.mark.parametrize('name,overrides,error,pattern', CASES,
                         ids=[c[0] for c in CASES])
def test_bad_config(name, overrides, error, pattern, request, tmp_path,
                    idx_data_dir, teacher_export, no_compile):
  """A bad config fails early with a one-line error; no workdir is left."""
  del name, no_compile
  config = _config(idx_data_dir, teacher_export)
  for field, value in overrides.items():
    if isinstance(value, str) and value.startswith('@'):
      value = request.getfixturevalue(value[1:])
    *parents, leaf = field.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  workdir = str(tmp_path / 'run')
  with pytest.raises(error, match=pattern) as info:
    loop.train_and_evaluate(config, workdir)
  assert '\n' not in str(info.value)
  assert cli.is_user_error(info.value)  # train.py: one line, exit status 2.
  assert not os.path.exists(workdir)


def test_unwritable_workdir(tmp_path, idx_data_dir, teacher_export,
                            no_compile):
  """A workdir that cannot be created names itself and the fix."""
  del no_compile
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  with pytest.raises(OSError, match=r"Cannot write to --workdir='.*a_file/"
                     r"run'.*choose a directory you can write to"):
    loop.train_and_evaluate(_config(idx_data_dir, teacher_export),
                                 str(blocker / 'run'))


def test_workdir_is_a_file(tmp_path, idx_data_dir, teacher_export,
                           no_compile):
  """A workdir that is an existing file says so."""
  del no_compile
  blocker = tmp_path / 'a_file'
  blocker.write_text('x')
  with pytest.raises(OSError, match=r"--workdir='.*a_file' is an existing "
                     r'file, not a directory; choose a directory'):
    loop.train_and_evaluate(_config(idx_data_dir, teacher_export),
                                 str(blocker))
  assert blocker.read_text() == 'x'


def test_full_disk(tmp_path, idx_data_dir, teacher_export, no_compile,
                   monkeypatch):
  """Too little free space: a clear error and the new workdir removed."""
  del no_compile
  monkeypatch.setattr(preflight.shutil, 'disk_usage',
                      lambda _: type('U', (), {'free': 1000})())
  workdir = str(tmp_path / 'run')
  with pytest.raises(OSError, match=r'Only 0 MiB free on the disk of '
                     r'--workdir=.*free some space'):
    loop.train_and_evaluate(_config(idx_data_dir, teacher_export),
                                 workdir)
  assert not os.path.exists(workdir)


def test_unknown_config_field_suggests_the_right_one():
  """A misspelt field of the locked config names the field it resembles."""
  config = smoke.get_config()
  config.lock()
  with pytest.raises(AttributeError, match="batch_size"):
    config.batchsize = 32


@pytest.mark.parametrize('images,labels,pattern', [
    (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int32),
     r'images must have rank 4 \(N, H, W, C\), got shape \(4, 28, 28\); add '
     r'the channel axis'),
    (np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32),
     r'images must be uint8 pixels .*got float32; convert them'),
    (np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int32),
     r'images have shape \(32, 32, 3\) but the data set expects '
     r'\(28, 28, 1\)'),
    (np.zeros((4, 28, 28, 1), np.uint8), np.zeros((4, 1), np.int32),
     r'labels must be a vector of 4 integers'),
    (np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 2, 10]),
     r'labels must be in \[0, 10\), found 0..10'),
    (np.zeros((4, 28, 28, 1), np.uint8), np.array([0.0, 1, 2, 3]),
     r'labels must be integers, got float64'),
])
def test_bad_arrays(images, labels, pattern):
  """Input arrays of the wrong rank, dtype, shape or label range."""
  with pytest.raises(ValueError, match=pattern):
    loader.check_arrays(images, labels, what='x', num_classes=10,
                        image_shape=(28, 28, 1))



def test_model_registry_suggests_the_closest_name():
  """models.get_info, which the importer and the tools call, says which
  name was meant, and suggests nothing when no name is close."""
  from adain_kd_jax import models  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"Did you mean 'wrn_40_2'\?$"):
    models.get_info('wrn_40-2')
  with pytest.raises(ValueError) as info:
    models.get_info('transformer')
  assert 'Did you mean' not in str(info.value)


def test_config_file_with_a_syntax_error(tmp_path):
  """train.py with a config file that does not parse: one line naming the
  file, the line and the text, exit status 2, no workdir."""
  (tmp_path / 'configs').mkdir()
  config = tmp_path / 'configs' / 'typo.py'
  config.write_text('"""A config."""\n\ndef get_config(:\n  pass\n')
  workdir = tmp_path / 'run'
  proc = run_train_py(str(workdir), f'--config={config}')
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr == (
      f'train.py: error: {config}, line 3: invalid syntax in '
      '`def get_config(:`; fix the file.\n')
  assert not workdir.exists()


def _run_importer(tmp_path, *args, env_path=()):
  """`python -m adain_kd_jax.torch_import.zoo ARGS` (PYTHONPATH `env_path`
  first); returns the finished process."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests.conftest import ROOT  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([*env_path, ROOT]))
  env.pop('XLA_FLAGS', None)
  return subprocess.run(
      [sys.executable, '-m', 'adain_kd_jax.torch_import.zoo', *args],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
      check=False)


def test_importer_without_torch_gives_the_install_line(tmp_path):
  """The importer where torch cannot be imported: one line with the pip
  command, exit status 2, nothing written."""
  hidden = tmp_path / 'no_torch'
  hidden.mkdir()
  (hidden / 'torch.py').write_text(
      "raise ImportError('No module named torch')\n")
  (tmp_path / 'w.pth').write_bytes(b'')
  proc = _run_importer(tmp_path, '--arch=resnet8', '--checkpoint=w.pth',
                       '--out=out', '--dataset=cifar100',
                       env_path=[str(hidden)])
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr == (
      'zoo.py: error: Reading PyTorch checkpoints needs torch, an optional '
      'dependency: pip install -r requirements-torch.txt (in a clone) or pip '
      'install "adain_kd_jax[torch]"\n')
  assert not (tmp_path / 'out').exists()


def test_importer_with_a_truncated_file(tmp_path):
  """A .pth file cut short (an interrupted download): one line saying so."""
  pytest.importorskip('torch')
  (tmp_path / 'w.pth').write_bytes(b'')
  proc = _run_importer(tmp_path, '--arch=resnet8', '--checkpoint=w.pth',
                       '--out=out', '--dataset=cifar100')
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr == ("zoo.py: error: Cannot read 'w.pth' as a PyTorch "
                         'checkpoint (EOFError: truncated); download it '
                         'again.\n')
  assert not (tmp_path / 'out').exists()


_PLAN = '''
from adain_kd_jax.experiments.parallel import PlannedRun


def get_plan(workdir):
  del workdir
  return [PlannedRun('good/seed0', 'configs/smoke.py'),
          PlannedRun('bad/seed1', 'configs/smoke.py', {OVERRIDES})]
'''


@pytest.mark.parametrize('overrides,pattern', [
    ("'batch_sise': 32", r"No config field 'batch_sise'\."),
    ("'loss.kdd': 1.0", r"No config field 'loss\.kdd'\."),
    ("'batch_size': 0", r'config\.batch_size=0 is invalid: it must be a '
                        r'positive integer'),
])
def test_campaign_plan_with_a_faulty_run(overrides, pattern, tmp_path):
  """A plan whose second run sets an unknown field or a bad value: one line
  naming that run and the field, exit status 2, nothing trained."""
  import re  # pylint: disable=g-import-not-at-top
  from tests.conftest import run_python  # pylint: disable=g-import-not-at-top
  plan = tmp_path / 'plan.py'
  plan.write_text(_PLAN.replace('{OVERRIDES}', '{' + overrides + '}'))
  workdir = tmp_path / 'runs'
  proc = run_python('-m', 'adain_kd_jax.experiments.campaign',
                    f'--plan={plan}', f'--workdir={workdir}', '--list')
  assert proc.returncode == 2, proc.stderr
  assert re.fullmatch(r"campaign\.py: error: plan run 'bad/seed1' "
                      r'\(configs/smoke\.py\): ' + pattern + r'.*\n',
                      proc.stderr), proc.stderr
  assert not workdir.exists()


def test_campaign_plan_with_a_syntax_error(tmp_path):
  """A plan file that does not parse: one line with its file and line."""
  from tests.conftest import run_python  # pylint: disable=g-import-not-at-top
  plan = tmp_path / 'plan.py'
  plan.write_text('def get_plan(workdir)\n  return []\n')
  proc = run_python('-m', 'adain_kd_jax.experiments.campaign',
                    f'--plan={plan}', f'--workdir={tmp_path / "runs"}')
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr == (f'campaign.py: error: {plan}, line 1: expected '
                         "':' in `def get_plan(workdir)`; fix the file.\n")


def test_mock_data_runs_without_tfds_metadata_warnings(caplog):
  """tfds warns that its mock sets lack dataset_info.json; a mock run's
  `run.mock_data` mutes exactly that message, which tfds does raise."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.mock_data = 8
  config.dataset = 'cifar100'

  def read():
    tfds.data_source('cifar100', split='test')

  with caplog.at_level('WARNING', logger='absl'):
    with tfds.testing.mock_data(num_examples=8):
      read()
    raised = [r for r in caplog.records if 'dataset_info.json' in r.message]
    caplog.clear()
    with run_lib.mock_data(config):
      read()
  assert raised  # tfds' own context warns ...
  assert not [r for r in caplog.records
              if 'dataset_info.json' in r.message]  # ... the run's does not.
