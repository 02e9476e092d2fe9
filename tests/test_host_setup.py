"""host_setup: the XLA:CPU flags, and that YNNPACK does not change results."""

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from adain_kd_jax import host_setup

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
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=_REPO)
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
      [sys.executable, '-c', _STEP_SCRIPT, '1' if ynnpack else '0'],
      env=env, capture_output=True, text=True, timeout=300, check=False)
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
