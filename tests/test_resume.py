"""A run killed (SIGKILL) or preempted (SIGTERM) resumes bit for bit."""

import json
import os
import re
import signal
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import idx_smoke_flags
from tests.conftest import run_train_py

_STEPS = 24


def _flags(idx_data_dir, teacher_export):
  return idx_smoke_flags(
      idx_data_dir, teacher_export, method='adain_kd',
      num_train_steps=_STEPS, eval_every_epochs=0.5, log_every_steps=1,
      checkpoint_every_steps=3) + ['--cpu_devices=2']


def _records(workdir):
  """metrics.jsonl without the timing field."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for r in records:
    r.pop('images_per_sec', None)
  return records


def _final_state(workdir):
  path = os.path.join(workdir, 'checkpoints', str(_STEPS), 'state')
  return ocp.StandardCheckpointer().restore(path)


def _wait_for_checkpoint(workdir, step, proc, timeout=240):
  path = os.path.join(workdir, 'checkpoints', str(step))
  end = time.time() + timeout
  while not os.path.isdir(path):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < end, f'no checkpoint {step} after {timeout} s'
    time.sleep(0.05)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, idx_data_dir, teacher_export):
  """The uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  proc = run_train_py(workdir, *_flags(idx_data_dir, teacher_export))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _assert_same_run(workdir, reference):
  assert _records(workdir) == _records(reference)
  jax.tree.map(np.testing.assert_array_equal, _final_state(workdir),
               _final_state(reference))


def test_sigkill_then_resume_is_bit_identical(tmp_path, idx_data_dir,
                                              teacher_export, reference):
  """Killed after its step-9 checkpoint, re-run: same params and metrics."""
  workdir = str(tmp_path / 'killed')
  flags_ = _flags(idx_data_dir, teacher_export)
  proc = run_train_py(workdir, *flags_, wait=False)
  _wait_for_checkpoint(workdir, 9, proc)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, 'summary.json'))
  again = run_train_py(workdir, *flags_)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resuming' in again.stdout
  _assert_same_run(workdir, reference)


def _stop_and_resume(workdir, flags_, reference, sig, exit_code, message):
  """Stops a run with `sig` after a checkpoint, checks its exit and one-line
  message (group 1: the step saved), resumes it and compares with the
  uninterrupted `reference`."""
  proc = run_train_py(workdir, *flags_, wait=False)
  _wait_for_checkpoint(workdir, 6, proc)
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == exit_code, err[-3000:]
  assert 'Traceback' not in err
  match = re.search(message, out, re.M)
  assert match, out
  saved = int(match.group(1))
  assert 6 <= saved < _STEPS
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(saved)))
  again = run_train_py(workdir, *flags_)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'Resuming {workdir} at step {saved}.' in again.stdout
  _assert_same_run(workdir, reference)


def test_sigterm_saves_exits_cleanly_and_resumes(tmp_path, idx_data_dir,
                                                 teacher_export, reference):
  """SIGTERM: checkpoint at the next step, exit 0; the re-run completes."""
  workdir = str(tmp_path / 'preempted')
  _stop_and_resume(workdir, _flags(idx_data_dir, teacher_export), reference,
                   signal.SIGTERM, 0, r'Preempted: saved step (\d+)')


def test_ctrl_c_saves_exits_130_and_resumes(tmp_path, idx_data_dir,
                                            teacher_export, reference):
  """Ctrl-C: as SIGTERM, one line and exit 130; the summary adds up both."""
  workdir = str(tmp_path / 'interrupted')
  _stop_and_resume(
      workdir, _flags(idx_data_dir, teacher_export), reference,
      signal.SIGINT, 130,
      r'^Interrupted \(Ctrl-C\): saved step (\d+) in '
      + re.escape(workdir) + r'; run the same command again to resume\.$')
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  with open(os.path.join(reference, 'summary.json')) as f:
    uninterrupted = json.load(f)
  assert summary['resumes'] == 1 and uninterrupted['resumes'] == 0
  # The first segment's time is in the total, not in this segment's.
  assert summary['wall_seconds_total'] > summary['wall_seconds'] + 1.0
  assert uninterrupted['wall_seconds_total'] == pytest.approx(
      uninterrupted['wall_seconds'], abs=0.5)
  assert summary['images_per_sec'] > 0
