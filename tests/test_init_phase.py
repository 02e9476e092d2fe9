"""The first training phase (training/init_phase.py, RepDistiller's
`init()`): what moves in it, the schedule after it, the main optimiser's
fresh state, the config check, and a run killed inside it resuming bit for
bit."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from adain_kd_jax.training import config_checks
from adain_kd_jax.training import init_phase
from adain_kd_jax.training import steps as steps_lib
from configs import smoke
from tests.conftest import build_tiny_step
from tests.conftest import idx_smoke_flags
from tests.conftest import make_teacher_variables
from tests.conftest import one_step
from tests.conftest import run_train_py
from tests.test_resume import _records
from tests.test_resume import _wait_for_checkpoint

IMAGE_SHAPE = (28, 28, 1)
PHASE = 3  # Steps of the first phase: init_epochs 0.3 of 10 steps.
TOTAL = 8


def _config(method='ab', teacher='resnet8x4'):
  config = smoke.get_config()
  config.update(model='resnet8', teacher=teacher, method=method,
                init_epochs=0.3)
  return config


def _parts(config):
  return build_tiny_step(config, IMAGE_SHAPE, total_steps=TOTAL)


def _batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def _moved(before, after):
  return jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)


def test_only_the_phase_params_move_during_it():
  """AB's phase moves the student's feature modules and the connectors,
  never the student's classifier (RepDistiller's `get_feat_modules`); after
  it every param of the student moves and the connectors stay (its
  distillation's optimiser leaves them out)."""
  parts = _parts(_config())
  assert parts.distiller.init_steps == PHASE
  state, step = parts.init_state(jax.random.key(0)), one_step(
      parts.multi_step)
  teacher_vars = make_teacher_variables('resnet8x4')
  for t in range(PHASE + 1):
    before = jax.device_get(state.params)
    state, _ = step(state, teacher_vars, _batch(t))
    moved = _moved(before, jax.device_get(state.params))
    fc = moved['student'].pop('fc')
    assert not any(jax.tree.leaves(fc)) if t < PHASE else all(
        jax.tree.leaves(fc))
    assert all(jax.tree.leaves(moved['student']))
    connectors = jax.tree.leaves(moved['ab'])
    assert connectors and (all(connectors) if t < PHASE else
                           not any(connectors))


def test_phase_labels_freeze_what_the_phase_does_not_train():
  """A phase of an adapter alone (FT's paraphraser) freezes the whole
  student; one of the student freezes its classifier only."""
  params = {'student': {'fc': {'kernel': 0}, 'stage1_block0': {'w': 0}},
            'para': {'w': 0}, 'other': {'w': 0}}
  assert init_phase.phase_labels(('para',))(params) == {
      'student': {'fc': {'kernel': 'frozen'},
                  'stage1_block0': {'w': 'frozen'}},
      'para': {'w': 'init'}, 'other': {'w': 'frozen'}}
  assert init_phase.phase_labels(('student',))(params)['student'] == {
      'fc': {'kernel': 'frozen'}, 'stage1_block0': {'w': 'init'}}


def test_the_main_schedule_and_momentum_start_after_the_phase():
  """The rate is constant in the phase, then the run's schedule over the
  remaining steps from its step 0; the main optimiser's state is still
  fresh when the phase ends (its momentum zero, its count 0)."""
  config = _config(method='fsp', teacher='resnet8')
  parts = _parts(config)
  _, main_schedule = steps_lib.create_optimizer(config, 10, TOTAL - PHASE)
  for t in range(TOTAL):
    expected = (config.learning_rate if t < PHASE
                else main_schedule(t - PHASE))
    np.testing.assert_allclose(parts.schedule(t), expected, rtol=1e-7)
  state, step = parts.init_state(jax.random.key(0)), one_step(
      parts.multi_step)
  fresh = jax.device_get(state.opt_state.main)
  teacher_vars = make_teacher_variables()
  for t in range(PHASE):
    state, metrics = step(state, teacher_vars, _batch(t))
    assert float(metrics['loss']) == float(metrics['fsp'])
  jax.tree.map(np.testing.assert_array_equal, fresh,
               jax.device_get(state.opt_state.main))
  assert any(np.any(x) for x in jax.tree.leaves(
      jax.device_get(state.opt_state.init)))
  state, metrics = step(state, teacher_vars, _batch(PHASE))
  assert float(metrics['loss']) == float(metrics['ce'])
  assert any(jax.tree.leaves(_moved(
      fresh, jax.device_get(state.opt_state.main))))


def test_the_phase_runs_at_its_own_learning_rate():
  """A first step of the phase moves its params by lr x (g + wd p) at
  config.init_learning_rate: twice as far at 0.02 as at 0.01, and with 0
  as far as at a config.learning_rate of 0.01; the schedule reports it."""
  teacher_vars = make_teacher_variables('resnet8x4')
  deltas = {}
  for lr, init_lr in ((0.01, 0.0), (0.05, 0.01), (0.05, 0.02)):
    config = _config()
    config.update(learning_rate=lr, init_learning_rate=init_lr)
    parts = _parts(config)
    assert float(parts.schedule(0)) == pytest.approx(init_lr or lr)
    state = parts.init_state(jax.random.key(0))
    before = jax.device_get(state.params['ab'])
    state, _ = one_step(parts.multi_step)(state, teacher_vars, _batch(0))
    deltas[lr, init_lr] = np.concatenate([
        np.ravel(b - a) for a, b in zip(
            jax.tree.leaves(before),
            jax.tree.leaves(jax.device_get(state.params['ab'])))])
  # Up to the float32 rounding of p + update (|p| < 1: below 1e-7).
  assert np.abs(deltas[0.01, 0.0]).max() > 1e-3
  np.testing.assert_allclose(deltas[0.05, 0.01], deltas[0.01, 0.0],
                             rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(deltas[0.05, 0.02], 2 * deltas[0.05, 0.01],
                             rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('overrides, match', [
    ({'init_epochs': -1.0}, r'config\.init_epochs=-1\.0 is invalid: it must '
     r'be >= 0'),
    ({'init_learning_rate': -0.1}, r'config\.init_learning_rate=-0\.1 is '
     r'invalid: it must be > 0, or 0 for config\.learning_rate'),
    ({'init_epochs': 2.0, 'num_train_steps': -1, 'num_epochs': 2.0},
     r'config\.init_epochs=2\.0 is invalid: the first phase must be shorter')])
def test_config_check_refuses_a_phase_that_leaves_nothing(overrides, match):
  """One line naming config.init_epochs; a method without the phase ignores
  the field; a phase longer than num_train_steps is refused at build."""
  config = _config(method='fsp', teacher='resnet8')
  config.update(overrides)
  with pytest.raises(ValueError, match=match) as e:
    config_checks.check(config)
  assert '\n' not in str(e.value)
  config.method = 'kd'
  config_checks.check(config)
  config = _config(method='fsp', teacher='resnet8')
  config.init_epochs = 0.8  # 8 steps of a run of 8.
  with pytest.raises(ValueError, match=r'config\.init_epochs=0\.8 is invalid'
                     r'.*\(8 steps\).*\(8 steps\)'):
    _parts(config)


_STEPS = 12


def _flags(idx_data_dir, teacher_export):
  # 256 examples of batch 16: 16 steps an epoch, the phase's 8 first.
  return idx_smoke_flags(
      idx_data_dir, teacher_export, method='fsp', init_epochs=0.5,
      num_train_steps=_STEPS, eval_every_epochs=0.5, log_every_steps=1,
      checkpoint_every_steps=3)


def _final_state(workdir):
  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp
  # pylint: enable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(_STEPS), 'state'))


def test_a_run_killed_inside_the_phase_resumes_bit_for_bit(
    tmp_path, idx_data_dir, teacher_export):
  """SIGKILL after the step-3 checkpoint (inside the 8-step phase), re-run:
  the same metrics and final state as the uninterrupted run, whose summary
  counts the phase's steps and whose rate is constant through the phase."""
  flags_ = _flags(idx_data_dir, teacher_export)
  reference = str(tmp_path / 'reference')
  proc = run_train_py(reference, *flags_)
  assert proc.returncode == 0, proc.stderr[-3000:]
  workdir = str(tmp_path / 'killed')
  proc = run_train_py(workdir, *flags_, wait=False)
  _wait_for_checkpoint(workdir, 3, proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  again = run_train_py(workdir, *flags_)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resuming' in again.stdout
  assert _records(workdir) == _records(reference)
  jax.tree.map(np.testing.assert_array_equal, _final_state(workdir),
               _final_state(reference))
  with open(os.path.join(reference, 'summary.json')) as f:
    assert json.load(f)['steps'] == _STEPS
  rates = [r['lr'] for r in _records(reference) if 'lr' in r]
  assert rates[:8] == [rates[0]] * 8 and rates[-1] < rates[0]
