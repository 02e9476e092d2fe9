"""host_setup: the XLA:CPU flags, and that YNNPACK does not change results."""

import importlib.metadata
import json
import os

import pytest

from adain_kd_jax import host_setup
from tests.conftest import run_python

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def jaxlib_version(monkeypatch):
  """Sets what importlib.metadata reports as jaxlib's version."""
  def set_version(version):
    real = importlib.metadata.version

    def fake(name):
      if name == 'jaxlib':
        if version is None:
          raise importlib.metadata.PackageNotFoundError(name)
        return version
      return real(name)
    monkeypatch.setattr(importlib.metadata, 'version', fake)
  return set_version


@pytest.mark.parametrize('before', ['', '--xla_force_host_platform_device_count=2'])
def test_adds_the_flag_and_keeps_other_flags(monkeypatch, jaxlib_version,
                                             before):
  jaxlib_version('0.10.2')
  monkeypatch.setenv('XLA_FLAGS', before)
  assert host_setup.set_xla_cpu_flags(ynnpack=True)
  assert os.environ['XLA_FLAGS'] == f'{before} {host_setup.YNN_FLAG}'.strip()


def test_off_adds_nothing(monkeypatch, jaxlib_version):
  jaxlib_version('0.10.2')
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert not host_setup.set_xla_cpu_flags(ynnpack=False)
  assert os.environ['XLA_FLAGS'] == '--xla_force_host_platform_device_count=2'


@pytest.mark.parametrize('own', [
    '--xla_cpu_experimental_ynn_fusion_type=',
    '--xla_cpu_experimental_ynn_fusion_type=dot'])
def test_users_own_ynn_setting_wins(monkeypatch, jaxlib_version, own):
  jaxlib_version('0.10.2')
  monkeypatch.setenv('XLA_FLAGS', own)
  assert not host_setup.set_xla_cpu_flags(ynnpack=True)
  assert os.environ['XLA_FLAGS'] == own


@pytest.mark.parametrize('version', ['0.9.0', '0.11.2', '0.12.1', None])
def test_unknown_jaxlib_gets_no_flag(monkeypatch, jaxlib_version, version):
  # XLA aborts on a flag it does not know, so only versions known to have it.
  jaxlib_version(version)
  monkeypatch.setenv('XLA_FLAGS', '')
  assert not host_setup.set_xla_cpu_flags(ynnpack=True)
  assert os.environ['XLA_FLAGS'] == ''


@pytest.mark.parametrize('value', ['0', '-1', 'two', ''])
def test_bad_cpu_devices_value_is_named(monkeypatch, value):
  monkeypatch.setenv('XLA_FLAGS', '')
  with pytest.raises(ValueError, match="--cpu_devices must be a number >= 1 "
                     "or 'auto'"):
    host_setup.set_cpu_devices((16, 32), value)
  assert os.environ['XLA_FLAGS'] == ''


def test_cpu_devices_number_auto_and_an_existing_count(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_foo=1')
  host_setup.set_cpu_devices((16, 32), '3')
  assert os.environ['XLA_FLAGS'] == (
      '--xla_foo=1 --xla_force_host_platform_device_count=3')
  # An XLA_FLAGS that already sets the count wins.
  host_setup.set_cpu_devices((16, 32), '2')
  assert os.environ['XLA_FLAGS'].count('device_count') == 1
  # 'auto': the most devices <= cores that divide every batch size.
  monkeypatch.setattr(os, 'cpu_count', lambda: 8)
  for batch_sizes, expected in (((16, 32), 8), ((12, 18), 6), ((7,), 7)):
    monkeypatch.setenv('XLA_FLAGS', '')
    host_setup.set_cpu_devices(batch_sizes, 'auto')
    assert os.environ['XLA_FLAGS'] == (
        f'--xla_force_host_platform_device_count={expected}')


_STEP_SCRIPT = r'''
import json, re, sys
from adain_kd_jax import host_setup
host_setup.set_xla_cpu_flags(ynnpack=sys.argv[1] == '1')
import jax, jax.numpy as jnp, numpy as np
from adain_kd_jax import models
model = models.create_model('resnet8', num_classes=10)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(16, 16, 16, 3)).astype(np.float32))
y = jnp.asarray(rng.integers(0, 10, 16))
variables = model.init(jax.random.key(0), x[:1], train=False)

def loss(params):
  (logits, feats), new = model.apply(
      {'params': params, 'batch_stats': variables['batch_stats']}, x,
      train=True, mutable=['batch_stats'])
  ce = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                     y[:, None], 1))
  return ce + 1e-3 * sum(jnp.mean(f ** 2) for f in feats.values()), new

(value, new), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
    variables['params'])
hlo = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(
    variables['params']).compile().as_text()
print(json.dumps({
    'loss': float(value),
    'grads': [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)],
    'stats': [np.asarray(s).ravel().tolist() for s in jax.tree.leaves(new)],
    'fusions': sorted(set(re.findall(r'kind=\w+', hlo)))
               + [str(hlo.count('kind=kCustom'))]}))
'''


def _train_step(ynnpack: bool) -> dict:
  proc = run_python('-c', _STEP_SCRIPT, '1' if ynnpack else '0')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ynnpack_train_step_matches_xla_default():
  """Same loss, gradients and batch statistics with and without YNNPACK."""
  ynn, default = _train_step(True), _train_step(False)
  # The flag took effect: XLA fused the program differently (YNNPACK
  # fusions are kind=kCustom). Convolutions go to YNNPACK when the thunks are
  # emitted, which the HLO text does not show.
  assert ynn['fusions'] != default['fusions']
  assert ynn['loss'] == pytest.approx(default['loss'], rel=1e-5)
  for a, b in zip(ynn['grads'] + ynn['stats'],
                  default['grads'] + default['stats'], strict=True):
    scale = max(max(abs(v) for v in b), 1e-6)
    assert max(abs(u - v) for u, v in zip(a, b)) <= 1e-4 * scale


@pytest.mark.parametrize('env, expected', [
    ({}, False),
    ({'SLURM_NTASKS': '2', 'SLURM_PROCID': '0'}, False),  # A batch script.
    ({'SLURM_STEP_NUM_TASKS': '1'}, False),
    ({'SLURM_STEP_NUM_TASKS': '2'}, True),  # srun -n 2.
    ({'ADAIN_KD_DISTRIBUTED': '1'}, True),
])
def test_distributed_from_environment(monkeypatch, env, expected):
  """A SLURM job step of several tasks or ADAIN_KD_DISTRIBUTED makes one
  multi-process run; a batch script of several tasks does not."""
  for name in ('SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'SLURM_PROCID',
               'ADAIN_KD_DISTRIBUTED'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert host_setup.distributed_from_environment() is expected


def test_prepare_sets_devices_and_flags_and_leaves_the_cache_off(
    monkeypatch, jaxlib_version):
  """The one set-up of every entry point: its keywords stand in for the
  flags; '' leaves JAX's compilation cache directory unset."""
  import jax  # pylint: disable=g-import-not-at-top
  jaxlib_version('0.10.2')
  monkeypatch.setenv('XLA_FLAGS', '')
  before = jax.config.jax_compilation_cache_dir
  host_setup.prepare((4,), cpu_devices='2', ynnpack=True,
                     compilation_cache='')
  assert os.environ['XLA_FLAGS'] == (
      f'--xla_force_host_platform_device_count=2 {host_setup.YNN_FLAG}')
  assert jax.config.jax_compilation_cache_dir == before
