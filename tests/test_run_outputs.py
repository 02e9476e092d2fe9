"""What a run writes while it trains, stopped once and resumed: TensorBoard
events (live), the progress bar, and a summary that adds up both segments."""

import glob
import json
import os
import sys

import pytest

from adain_kd_jax.training import loop
from adain_kd_jax.training import preemption
from tests.conftest import idx_smoke_config
from tests.conftest import read_events

_STOP_AT = 6
_STEPS = 8
_BATCH = 16


def _scalars(workdir):
  """{tag: sorted steps} over every event file in WORKDIR/tb."""
  steps = {}
  for path in glob.glob(os.path.join(workdir, 'tb', 'events.out.tfevents.*')):
    for tag, values in read_events(path).items():
      steps.setdefault(tag, set()).update(s for s, _ in values)
  return {tag: sorted(s) for tag, s in steps.items()}


def _meta(workdir, step):
  with open(os.path.join(workdir, 'checkpoints', str(step), 'meta',
                         'metadata')) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def stopped_and_resumed(tmp_path_factory, idx_data_dir, teacher_export):
  """adain_kd for 8 steps, stopped after step 6 (as by SIGTERM), resumed."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = idx_smoke_config(
      idx_data_dir, teacher_export, method='adain_kd',
      num_train_steps=_STEPS, batch_size=_BATCH, log_every_steps=2,
      checkpoint_every_steps=2, eval_every_epochs=0.25)  # Eval at 4 and 8.
  seen = {}

  class StopAt(preemption.PreemptionWatcher):
    """Stops at step 6, noting what TensorBoard could read by then."""

    def should_stop(self, step):
      if step == _STOP_AT:
        seen['scalars'] = _scalars(workdir)
      return step == _STOP_AT

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop.preemption, 'PreemptionWatcher', StopAt)
    first = loop.train_and_evaluate(config, workdir)
  second = loop.train_and_evaluate(config, workdir)
  return {'workdir': workdir, 'first': first, 'second': second,
          'live': seen['scalars']}


def test_stop_returns_the_step(stopped_and_resumed):
  assert stopped_and_resumed['first'] == {
      'model': 'resnet8', 'method': 'adain_kd', 'preempted_at': _STOP_AT,
      'interrupted': False}


def test_tensorboard_is_written_during_training(stopped_and_resumed):
  """At step 6 the events of steps 2 and 4 were already on disk."""
  live = stopped_and_resumed['live']
  assert live['train/loss'] == [2, 4]
  assert live['test/accuracy'] == [4]


def test_tensorboard_has_every_scalar(stopped_and_resumed):
  """Every loss term, lr, grad norm, images/s and the evaluations."""
  scalars = _scalars(stopped_and_resumed['workdir'])
  for tag in ('loss', 'ce', 'kd', 'adain', 'lr', 'grad_norm', 'accuracy'):
    assert scalars[f'train/{tag}'] == [2, 4, 6, 8], tag
  # images/s is measured from the second call of each segment on.
  assert scalars['train/images_per_sec'] == [2, 4, 6, 8]
  assert scalars['test/accuracy'] == scalars['test/loss'] == [4, 8]
  assert 'test/count' not in scalars and 'train/epoch' not in scalars


def test_summary_adds_up_the_segments(stopped_and_resumed):
  """Wall time, images/s and resumes over both segments."""
  workdir = stopped_and_resumed['workdir']
  summary = stopped_and_resumed['second']
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f) == summary
  before, end = _meta(workdir, _STOP_AT), _meta(workdir, _STEPS)
  assert summary['resumes'] == 1 and end['resumes'] == 1
  assert 'resumes' not in before
  assert summary['wall_seconds_total'] == pytest.approx(
      before['wall_seconds_total'] + summary['wall_seconds'], abs=0.5)
  # Each segment's first call compiles and is not counted: steps 2..6 of
  # the first, step 8 of the second.
  assert before['train_images_total'] == 5 * _BATCH
  assert end['train_images_total'] == 6 * _BATCH
  assert end['train_seconds_total'] > before['train_seconds_total'] > 0
  # The summary comes a little after the last checkpoint: a little slower.
  assert 0 < summary['images_per_sec'] <= (
      end['train_images_total'] / end['train_seconds_total'])


def test_progress_bar_says_compiling_before_the_first_step(
    tmp_path, idx_data_dir, teacher_export, capsys):
  """On a terminal, no ETA until the first step has run: 'compiling...'."""
  config = idx_smoke_config(idx_data_dir, teacher_export, method='none',
                            num_train_steps=2, compare_to='')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(sys.stderr, 'isatty', lambda: True)
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  err = capsys.readouterr().err
  compiling = err.index('[compiling...]')
  assert '<' not in err[:compiling]  # tqdm's ETA reads 'elapsed<remaining'.
  assert '<' in err[compiling:]


def test_progress_in_a_log_is_a_line_every_n_steps(tmp_path, idx_data_dir,
                                                   teacher_export, capsys):
  """Not a terminal: one line at compile time, then one every
  log_every_steps steps and at the end; no carriage returns."""
  config = idx_smoke_config(idx_data_dir, teacher_export, method='none',
                            num_train_steps=10, log_every_steps=4,
                            compare_to='')
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  err = capsys.readouterr().err
  assert '\r' not in err
  lines = [l for l in err.splitlines() if l.startswith('none:resnet8: step')]
  assert lines[0] == 'none:resnet8: step 0/10, compiling...'
  assert [l.split()[2] for l in lines[1:]] == ['4/10', '8/10', '10/10']
  assert 'step/s' in lines[-1] and 'test_acc=' in lines[-1]


def test_a_finished_run_run_again_prints_its_result_and_trains_nothing(
    stopped_and_resumed, monkeypatch, capsys):
  """The same command on a finished run: its summary, printed as it was
  written; no run built, nothing evaluated, no resume counted, no file
  touched."""
  # pylint: disable=g-import-not-at-top
  import ml_collections
  from adain_kd_jax.training import run as run_lib
  # pylint: enable=g-import-not-at-top
  workdir = stopped_and_resumed['workdir']
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  files = {p: os.path.getmtime(p) for p in glob.glob(
      os.path.join(workdir, '**'), recursive=True)}

  def no_run(*args, **kwargs):
    raise AssertionError('a finished run was built again')
  monkeypatch.setattr(run_lib, 'create_run', no_run)
  capsys.readouterr()
  again = loop.train_and_evaluate(config, workdir)
  assert again == stopped_and_resumed['second'] and again['resumes'] == 1
  out = capsys.readouterr().out
  assert 'finished before: test accuracy' in out and 'Nothing trained' in out
  assert {p: os.path.getmtime(p) for p in files} == files
