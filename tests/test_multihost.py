"""Two processes on localhost (JAX's multi-process runtime, gloo collectives)
train exactly like one process with two devices on the same global batches."""

import socket
import subprocess

import numpy as np
import pytest

from adain_kd_jax.training import checkpoints
from tests.conftest import idx_smoke_flags
from tests.conftest import run_train_py


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def train_flags(idx_data_dir, teacher_export):
  """The run that both layouts train (one CPU device a process)."""
  return idx_smoke_flags(
      idx_data_dir, teacher_export, method='adain_kd', num_train_steps=6,
      log_every_steps=2, export=True) + ['--cpu_devices=1']


def _communicate_all(procs, timeout):
  """Every process's (stdout, stderr); on a timeout all are killed and the
  failure shows each one's stderr (one process waiting at a barrier for
  another is the usual hang)."""
  try:
    return [p.communicate(timeout=timeout) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    tails = [f'process {i}: {p.communicate()[1][-2000:]}'
             for i, p in enumerate(procs)]
    pytest.fail(f'timed out after {timeout} s\n' + '\n'.join(tails))


def _load(workdir):
  import jax  # pylint: disable=g-import-not-at-top
  from adain_kd_jax import models
  model = models.create_model('resnet8', 10)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      jax.eval_shape(lambda: model.init(
          jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32),
          train=False)))
  return checkpoints.load_teacher(f'{workdir}/export', model='resnet8',
                                  num_classes=10,
                                  abstract_variables=abstract)


def test_two_processes_match_one_process_with_two_devices(
    tmp_path, idx_data_dir, teacher_export):
  """Same params, batch stats and test accuracy, to float tolerance."""
  flags_ = train_flags(idx_data_dir, teacher_export)
  single = str(tmp_path / 'single')
  proc = run_train_py(single, *flags_[:-1], '--cpu_devices=2')
  assert proc.returncode == 0, proc.stderr[-3000:]

  multi = str(tmp_path / 'multi')
  port = _free_port()
  procs = [run_train_py(multi, *flags_,
                        f'--coordinator_address=localhost:{port}',
                        '--num_processes=2', f'--process_id={i}', wait=False)
           for i in range(2)]
  outs = _communicate_all(procs, timeout=300)
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i}: {err[-3000:]}'
  # Process 0 alone writes the logs and the summary.
  assert '[adain_kd] resnet8 on fashion_mnist' in outs[0][0]
  assert '[adain_kd]' not in outs[1][0]

  assert_same_training(single, multi)


def assert_same_training(single, multi):
  """The two exports: same params and batch stats (float tolerance), same
  test accuracy to one example in 64."""
  (v_single, m_single), (v_multi, m_multi) = _load(single), _load(multi)
  assert m_single['test_accuracy'] == pytest.approx(m_multi['test_accuracy'],
                                                    abs=1 / 64)
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               v_single, v_multi)
