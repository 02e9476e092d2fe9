"""Faults: a non-finite loss stops the run (or is skipped); corrupted
checkpoints fall back to the previous one; SIGTERM and Ctrl-C ask to stop."""

import glob
import os
import re
import shutil
import signal

import jax
import numpy as np
import pytest

from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import loop
from adain_kd_jax.training import preemption
from tests.conftest import idx_smoke_config
from tests.conftest import make_teacher_variables
from tests.conftest import run_python


def _config(idx_data_dir, teacher, **overrides):
  defaults = {'method': 'adain_kd', 'log_every_steps': 2,
              'checkpoint_every_steps': 2}
  return idx_smoke_config(idx_data_dir, teacher, **{**defaults, **overrides})


@pytest.fixture(scope='module')
def nan_teacher(tmp_path_factory):
  """A resnet8 export whose classifier holds a NaN (a broken teacher)."""
  variables = make_teacher_variables()
  kernel = np.array(variables['params']['fc']['kernel'])
  kernel[0, 0] = np.nan
  variables['params']['fc']['kernel'] = kernel
  directory = str(tmp_path_factory.mktemp('nan') / 'export')
  checkpoints.save_teacher(directory, variables,
                           {'model': 'resnet8', 'num_classes': 10}, step=1)
  return directory


def _install_teacher(source, dest):
  """Makes `dest` a copy of the teacher export `source` (same path, so the
  run's config, and its config.json, do not change)."""
  shutil.rmtree(dest, ignore_errors=True)
  shutil.copytree(source, dest)


def test_non_finite_loss_names_step_and_terms(tmp_path, idx_data_dir,
                                              teacher_export, nan_teacher):
  """A NaN from step 5 on stops the run at 5; checkpoint 4 stays good."""
  workdir = str(tmp_path / 'run')
  teacher = str(tmp_path / 'teacher')
  _install_teacher(teacher_export, teacher)
  longer = ('num_train_steps',)
  loop.train_and_evaluate(
      _config(idx_data_dir, teacher, num_train_steps=4), workdir)
  _install_teacher(nan_teacher, teacher)  # The teacher breaks.
  with pytest.raises(FloatingPointError,
                     match=r'Non-finite adain, grad_norm, kd, loss at step 5 '
                     r'.*last good checkpoint \(step 4\).*skip_nonfinite'):
    loop.train_and_evaluate(
        _config(idx_data_dir, teacher, num_train_steps=8), workdir, longer)
  steps = sorted(int(os.path.basename(p)) for p in
                 glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')))
  assert steps[-1] == 4
  # And the run resumes from it (with the good teacher) to the end.
  _install_teacher(teacher_export, teacher)
  summary = loop.train_and_evaluate(
      _config(idx_data_dir, teacher, num_train_steps=6), workdir, longer)
  assert summary['steps'] == 6 and summary['skipped_steps'] == 0


def test_skip_nonfinite_counts_and_leaves_params(tmp_path, idx_data_dir,
                                                 nan_teacher):
  """With skip_nonfinite, every NaN step is skipped, counted, not applied."""
  workdir = str(tmp_path / 'skip')
  summary = loop.train_and_evaluate(
      _config(idx_data_dir, nan_teacher, num_train_steps=4,
              skip_nonfinite=True), workdir)
  assert summary['skipped_steps'] == 4
  assert np.isfinite(summary['test_accuracy'])


def _state():
  return {'params': make_teacher_variables()['params'],
          'step': np.int32(0)}


def _two_checkpoints(directory):
  """Steps 1 and 2 of a small state, saved and committed."""
  ckpt = checkpoints.RunCheckpointer(directory, keep=3)
  for step in (1, 2):
    ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, _state()),
              {'step': step})
  ckpt.wait()
  ckpt.close()


def _damage(directory, how):
  """Overwrites ('corrupt') or cuts short ('truncate') step 2's data files."""
  paths = [p for p in glob.glob(os.path.join(directory, '2', 'state', '**',
                                             'd', '*'), recursive=True)
           if os.path.isfile(p)]
  assert paths
  for path in paths:
    if how == 'truncate':
      os.truncate(path, os.path.getsize(path) // 2)
    else:
      with open(path, 'wb') as f:
        f.write(b'\x00garbage' * 7)


@pytest.mark.parametrize('how', ['corrupt', 'truncate'])
def test_damaged_newest_checkpoint_falls_back(tmp_path, capsys, how):
  """A damaged newest step: one line (step skipped, why, step used),
  deleted, the previous one restored."""
  directory = str(tmp_path / 'ckpt')
  _two_checkpoints(directory)
  _damage(directory, how)
  ckpt = checkpoints.RunCheckpointer(directory, keep=3)
  restored, meta = ckpt.restore(jax.eval_shape(_state))
  ckpt.close()
  assert meta == {'step': 1}
  jax.tree.map(np.testing.assert_array_equal, restored, _state())
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 1, lines
  assert re.fullmatch(r'Checkpoint step 2 in .* is corrupted or incomplete '
                      r'\(\w+: .+\); deleted it and resumed from step 1\.',
                      lines[0]), lines[0]
  assert not os.path.exists(os.path.join(directory, '2'))


_FALLBACK_SCRIPT = """
import sys
from absl import logging
import jax
from adain_kd_jax.training import checkpoints
from tests import test_faults
logging.set_verbosity(logging.WARNING)  # As train.py.
directory, how = sys.argv[1:]
test_faults._two_checkpoints(directory)
test_faults._damage(directory, how)
ckpt = checkpoints.RunCheckpointer(directory, keep=3)
_, meta = ckpt.restore(jax.eval_shape(test_faults._state))
ckpt.close()
assert meta == {'step': 1}, meta
"""


@pytest.mark.parametrize('how', ['corrupt', 'truncate'])
def test_fallback_is_quiet_on_stderr(tmp_path, how):
  """In a process of its own (as train.py): nothing at all on stderr, where
  orbax's failed reads used to leave hundreds of lines of tracebacks."""
  proc = run_python('-c', _FALLBACK_SCRIPT, str(tmp_path / 'ckpt'), how)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stderr.splitlines() == []
  assert len(proc.stdout.splitlines()) == 1, proc.stdout


def test_no_recompilation_after_the_first_step(tmp_path, idx_data_dir,
                                               teacher_export, monkeypatch):
  """12 steps, 2 evaluations, checkpoints: each step function traced once."""
  from adain_kd_jax.training import steps
  traces = {'train': 0, 'eval': 0}
  train_step, eval_step = steps.train_step, steps.eval_step

  def counted_train(*args, **kwargs):
    traces['train'] += 1
    return train_step(*args, **kwargs)

  def counted_eval(*args, **kwargs):
    traces['eval'] += 1
    return eval_step(*args, **kwargs)

  monkeypatch.setattr(steps, 'train_step', counted_train)
  monkeypatch.setattr(steps, 'eval_step', counted_eval)
  summary = loop.train_and_evaluate(
      _config(idx_data_dir, teacher_export, num_train_steps=12,
              eval_every_epochs=0.5, log_every_steps=3,
              checkpoint_every_steps=4), str(tmp_path / 'run'))
  assert summary['steps'] == 12
  assert traces == {'train': 1, 'eval': 1}


def test_first_ctrl_c_asks_to_stop_second_aborts():
  """SIGINT once: stop at the next step; twice: KeyboardInterrupt at once."""
  # pytest-xdist's workers ignore SIGINT; the watcher restores what it found.
  previous = signal.getsignal(signal.SIGINT)
  watcher = preemption.PreemptionWatcher(sync_every=1)
  try:
    assert not watcher.should_stop(1)
    signal.raise_signal(signal.SIGINT)
    assert watcher.should_stop(2) and watcher.interrupted
    with pytest.raises(KeyboardInterrupt, match='second Ctrl-C, without '
                       'saving.*run the same command to resume'):
      signal.raise_signal(signal.SIGINT)
  finally:
    watcher.close()
  assert signal.getsignal(signal.SIGINT) is previous


def test_sigterm_asks_to_stop_and_is_not_an_interrupt():
  """SIGTERM: stop at the next step; the run is preempted, not interrupted."""
  previous = signal.getsignal(signal.SIGTERM)
  watcher = preemption.PreemptionWatcher(sync_every=1)
  try:
    signal.raise_signal(signal.SIGTERM)
    assert watcher.should_stop(1) and not watcher.interrupted
  finally:
    watcher.close()
  assert signal.getsignal(signal.SIGTERM) is previous


def test_sigusr1_asks_to_stop_as_sigterm_does(monkeypatch):
  """SIGUSR1 (SLURM's time-limit warning) stops at the next step; another
  signal may be named, or none, and a bad name says how to fix it."""
  monkeypatch.delenv(preemption.STOP_SIGNAL_ENV, raising=False)
  previous = signal.getsignal(signal.SIGUSR1)
  watcher = preemption.PreemptionWatcher(sync_every=1)
  try:
    assert not watcher.should_stop(1)
    signal.raise_signal(signal.SIGUSR1)
    assert watcher.should_stop(2) and not watcher.interrupted
  finally:
    watcher.close()
  assert signal.getsignal(signal.SIGUSR1) is previous
  monkeypatch.setenv(preemption.STOP_SIGNAL_ENV, 'usr2')
  assert preemption.stop_signals()[-1] == signal.SIGUSR2
  monkeypatch.setenv(preemption.STOP_SIGNAL_ENV, 'none')
  assert preemption.stop_signals() == (signal.SIGTERM, signal.SIGINT)
  monkeypatch.setenv(preemption.STOP_SIGNAL_ENV, 'USR9')
  with pytest.raises(ValueError, match=r"ADAIN_KD_STOP_SIGNAL='USR9' names "
                     r'no signal; use e\.g\. USR1'):
    preemption.stop_signals()


def test_a_full_disk_mid_run_is_one_line_naming_the_saved_step(
    tmp_path, idx_data_dir, teacher_export, monkeypatch):
  """The disk fills while step 4 is saved: one user error (OSError, exit
  status 2 from the command line) saying step 2 is saved and how to resume;
  the rerun resumes from step 2."""
  from adain_kd_jax import cli  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  config = _config(idx_data_dir, teacher_export, num_train_steps=6)
  save = checkpoints.ocp.CheckpointManager.save

  def save_until_full(self, step, *args, **kwargs):
    if step == 4:  # As orbax reports it: the OSError under its own error.
      try:
        raise OSError(28, 'No space left on device')
      except OSError as full:
        raise RuntimeError('the checkpoint write failed') from full
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'save',
                      save_until_full)
  with pytest.raises(OSError) as raised:
    loop.train_and_evaluate(config, workdir)
  message = str(raised.value)
  assert cli.is_user_error(raised.value)
  assert 'is full' in message and 'step 2 is saved' in message, message
  assert 'run the same command again to resume' in message
  monkeypatch.setattr(checkpoints.ocp.CheckpointManager, 'save', save)
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['resumes'] == 1
