"""Test set-up: eight simulated CPU devices, float32, a compilation cache.

The tests run with the XLA:CPU flags train.py sets by default (YNNPACK
fusions, `host_setup.set_xla_cpu_flags`), so they check the code path that
trains; XLA_FLAGS with its own `xla_cpu_experimental_ynn_fusion_type` wins.

Must run before JAX is imported anywhere, so it sets the flags at import time.
"""
import os
import subprocess
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
# Tests compile many programs and run each on a few examples: XLA:CPU's
# backend optimisations cost more time than they save (a MobileNetV2's init
# compiles in 6 s instead of 15). Child processes (train.py, benchmarks)
# compile as users do: run_python drops these flags.
if "xla_backend_optimization_level" not in _flags:
  _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()

from adain_kd_jax import host_setup

host_setup.set_xla_cpu_flags(ynnpack=True)

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.expanduser("~"), ".cache", "adain_kd_jax_jit"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order
import pytest  # pylint: disable=g-import-not-at-top,g-bad-import-order

from adain_kd_jax import models
from adain_kd_jax.training import checkpoints


def first_of_each_family(exclude=()):
  """The first registry model of each family (its smallest), in registry
  order; families in `exclude` are left out."""
  firsts = {}
  for name, info in models.MODELS.items():
    if info.family not in exclude:
      firsts.setdefault(info.family, name)
  return list(firsts.values())


def make_teacher_variables(name='resnet8', num_classes=10,
                           image_shape=(28, 28, 1), seed=0):
  """Random teacher variables with non-trivial BatchNorm running stats."""
  model = models.create_model(name, num_classes)
  variables = model.init(jax.random.key(seed),
                         np.zeros((1, *image_shape), np.float32), train=False)
  rng = np.random.default_rng(seed)
  # Running statistics away from (0, 1), so that train=True vs. False differ,
  # but not so far that the ReLUs switch everything off.
  batch_stats = jax.tree_util.tree_map_with_path(
      lambda path, x: (rng.uniform(0.5, 1.5, x.shape) if 'var' in str(path[-1])
                       else rng.normal(0.0, 0.1, x.shape)).astype(np.float32),
      variables['batch_stats'])
  return {'params': variables['params'], 'batch_stats': batch_stats}


def trace_loss(distiller, image_shape, batch=2):
  """(variables, loss) of `distiller` as shapes only (jax.eval_shape): its
  init and its loss on a batch of `batch`, with the teacher's variables
  as shapes too; for a method's traces on every pair of a table."""
  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  from adain_kd_jax.methods import objective
  # pylint: enable=g-import-not-at-top
  x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32)
  variables = jax.eval_shape(distiller.init, jax.random.key(0), x)
  t_vars = objective.teacher_variables_struct(distiller, image_shape)
  loss, _ = jax.eval_shape(
      distiller.loss_fn, variables['params'],
      {'batch_stats': variables['batch_stats'], 'term_state': {}, 'teacher': t_vars},
      {'image': x, 'label': jax.ShapeDtypeStruct((batch,), jnp.int32)},
      jax.random.key(0), 0)
  return variables, loss


def build_tiny_step(config, image_shape, total_steps=100):
  """`config`'s step parts (step_builder.StepParts) for the methods' step
  tests: 10 classes, 10 steps an epoch, no crop or flip."""
  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import step_builder
  from adain_kd_jax.training import steps as steps_lib
  # pylint: enable=g-import-not-at-top
  return step_builder.build_step(
      config, steps_lib.create_mesh(), num_classes=10,
      image_shape=image_shape,
      prep=steps_lib.Preprocess(key=jax.random.key(1), mean=(0.3,),
                                std=(0.35,), crop_padding=0, flip=False),
      steps_per_epoch=10, total_steps=total_steps)


def train_a_few_steps(config, term, batch, teacher_vars, image_shape,
                      steps=4):
  """Trains `config`'s jitted step (10 steps an epoch, one step a call)
  `steps` times on `batch`; returns the term's values, the total losses and,
  per leaf of the term's trained module (params[term]), whether it moved."""
  parts = build_tiny_step(config, image_shape)
  state = parts.init_state(jax.random.key(0))
  p_train_step = one_step(parts.multi_step)
  # A term without a trained module of its own (KDSVD) moves nothing.
  before = jax.device_get(state.params.get(term, {}))
  values, totals = [], []
  for _ in range(steps):
    state, metrics = p_train_step(state, teacher_vars, batch)
    values.append(float(jax.device_get(metrics[term])))
    totals.append(float(jax.device_get(metrics['loss'])))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                       jax.device_get(state.params.get(term, {})))
  return values, totals, jax.tree.leaves(moved)


def term_inputs(distiller, batch):
  """What a term's reference test compares against, from a fresh init and
  random teacher variables on `batch` ({'image' uint8, 'label'}): a dict
  of the variables, teacher variables, float images, the loss and metrics
  of `loss_fn`, and the student's (training mode) and teacher's features."""
  variables = distiller.init(
      jax.random.key(0), np.zeros((1, *batch['image'].shape[1:]), np.float32))
  teacher_vars = make_teacher_variables()
  images = batch['image'].astype(np.float32) / 255.0
  nondiff_vars = {'batch_stats': variables['batch_stats'], 'term_state': {},
                  'teacher': teacher_vars}
  loss, (metrics, _) = distiller.loss_fn(
      variables['params'], nondiff_vars,
      {'image': images, 'label': batch['label']}, jax.random.key(0), 0)
  _, f_s = distiller.student.apply(
      {'params': variables['params']['student'],
       'batch_stats': variables['batch_stats']['student']},
      images, train=True, mutable=['batch_stats'])[0]
  _, f_t = distiller.teacher.apply(teacher_vars, images, train=False)
  return {'variables': variables, 'teacher_vars': teacher_vars,
          'images': images, 'loss': loss, 'metrics': metrics, 'f_s': f_s,
          'f_t': f_t}


@pytest.fixture(scope='session')
def teacher_export(tmp_path_factory):
  """A tiny exported resnet8 teacher for 10-class 28x28x1 data."""
  directory = str(tmp_path_factory.mktemp('teacher') / 'export')
  checkpoints.save_teacher(
      directory, make_teacher_variables(),
      {'model': 'resnet8', 'num_classes': 10, 'dataset': 'fashion_mnist',
       'image_shape': [28, 28, 1], 'test_accuracy': 0.5}, step=1)
  return directory


@pytest.fixture(scope='session')
def idx_data_dir(tmp_path_factory):
  """Small Fashion-MNIST-shaped IDX files: 256 train, 64 test examples."""
  from adain_kd_jax.data import idx  # pylint: disable=g-import-not-at-top
  directory = tmp_path_factory.mktemp('idx')
  rng = np.random.default_rng(0)
  for prefix, n in (('train', 256), ('t10k', 64)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    # Class-dependent brightness, so that a few steps learn something.
    images = (rng.integers(0, 128, (n, 28, 28)) + 12 * labels[:, None, None])
    idx.write_idx(str(directory / f'{prefix}-images-idx3-ubyte.gz'),
                  images.astype(np.uint8))
    idx.write_idx(str(directory / f'{prefix}-labels-idx1-ubyte.gz'), labels)
  return str(directory)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tests/test_slurm.py's local cluster: the lock its workers take to start it,
# and the mark that says the tests started it (stopped at the session's end).
SLURM_START_LOCK = os.path.join(tempfile.gettempdir(),
                                'adain_kd_jax_slurm_start.lock')
SLURM_STARTED_MARK = os.path.join(tempfile.gettempdir(),
                                  'adain_kd_jax_slurm_started_by_tests')


def pytest_sessionfinish(session):
  """Stops a local SLURM cluster that the tests started, once every worker
  is done (in the controlling process only, as pytest-xdist calls this hook
  in each worker too)."""
  if hasattr(session.config, 'workerinput') or not os.path.exists(
      SLURM_STARTED_MARK):
    return
  os.remove(SLURM_STARTED_MARK)
  subprocess.run([os.path.join(ROOT, 'scripts', 'slurm_local.sh'), 'stop'],
                 capture_output=True, timeout=120, check=False)


def _subprocess_env():
  """The test environment for a child Python, which sets its own XLA_FLAGS."""
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  return env


def run_python(*args, timeout=300):
  """Runs `python *args` in the repository root; returns the finished process."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=_subprocess_env(),
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def run_train_py(workdir, *flags_, timeout=300, wait=True):
  """Starts train.py in a subprocess (CPU device count chosen by train.py)."""
  args = [os.path.join(ROOT, 'train.py'), f'--workdir={workdir}', *flags_]
  if not wait:
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    return subprocess.Popen([sys.executable, *args], cwd=ROOT,
                            env=_subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return run_python(*args, timeout=timeout)


def one_step(multi_step):
  """A jitted multi-step (`StepParts.multi_step`), one step a call.

  Returns `step(state, teacher_vars, batch) -> (state, metrics)` with an
  unstacked batch and unstacked metrics.
  """

  def step(state, teacher_vars, batch):
    state, metrics = multi_step(state, teacher_vars, None,
                                jax.tree.map(lambda x: x[None], batch))
    return state, jax.tree.map(lambda m: m[0], metrics)

  return step


JIT = pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])


def maybe_jit(fn, jit, **kwargs):
  """Returns `fn`, jitted when `jit` (kwargs are static, bound by closure)."""
  bound = lambda *args: fn(*args, **kwargs)
  return jax.jit(bound) if jit else bound


def rand(shape, seed, scale=1.0, offset=0.0):
  """Deterministic float32 normal(offset, scale) array."""
  return (offset + scale * np.random.default_rng(seed).normal(size=shape)
          ).astype(np.float32)


def read_events(path):
  """Scalars of one TFRecord event file: {tag: [(step, value)]}."""
  # pylint: disable=g-import-not-at-top
  import struct
  from tensorboardX.proto import event_pb2
  # pylint: enable=g-import-not-at-top
  scalars = {}
  with open(path, 'rb') as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
    for value in event.summary.value:
      scalars.setdefault(value.tag, []).append((event.step,
                                                value.simple_value))
  return scalars


@pytest.fixture
def no_network(monkeypatch):
  """Makes any network connection fail at once instead of retrying."""
  import socket  # pylint: disable=g-import-not-at-top

  def refuse(*args, **kwargs):
    del args, kwargs
    raise OSError('network disabled in this test')

  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket.socket, 'connect', refuse)


def _idx_smoke_settings(idx_data_dir, teacher, overrides):
  """What configs/smoke.py changes for the `idx_data_dir` files."""
  return {'data_source': 'idx', 'data_dir': idx_data_dir, 'train_limit': 0,
          'test_limit': 0, 'teacher': 'resnet8',
          'teacher_checkpoint': teacher, 'batch_size': 16,
          'eval_batch_size': 32, 'compare_to': '', **overrides}


def idx_smoke_config(idx_data_dir, teacher, **overrides):
  """configs/smoke.py on the `idx_data_dir` files with a resnet8 teacher."""
  from configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.update(_idx_smoke_settings(idx_data_dir, teacher, overrides))
  return config


def idx_smoke_flags(idx_data_dir, teacher, **overrides):
  """`idx_smoke_config` as train.py flags."""
  return ['--config=configs/smoke.py'] + [
      f'--config.{k}={v}'
      for k, v in _idx_smoke_settings(idx_data_dir, teacher, overrides).items()]
