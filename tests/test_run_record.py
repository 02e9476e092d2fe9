"""WORKDIR/config.json: written at the start; a resume under another config is
refused (one line, nothing changed) unless the change is allowed and recorded."""

import hashlib
import json
import os

import pytest

from adain_kd_jax import cli
from adain_kd_jax.training import loop
from adain_kd_jax.training import run_record
from configs import default
from tests.conftest import idx_smoke_config
from tests.conftest import idx_smoke_flags
from tests.conftest import run_train_py


def _snapshot(directory):
  """{relative path: sha256} of every file under `directory`."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


def _begun(tmp_path, config):
  """A workdir that recorded `config` and holds a (fake) checkpoint."""
  workdir = str(tmp_path / 'run')
  run_record.write(workdir, config)
  os.makedirs(os.path.join(workdir, 'checkpoints', '8'))
  return workdir


def test_no_progress_no_check(tmp_path):
  """A recorded config without checkpoints or summary binds nothing."""
  workdir = str(tmp_path / 'run')
  run_record.write(workdir, default.get_config())
  other = default.get_config()
  other.method = 'kd'
  assert run_record.check_resume(workdir, other) == []


def test_neutral_fields_may_change(tmp_path):
  """Logging, checkpointing and input-worker fields differ freely."""
  workdir = _begun(tmp_path, default.get_config())
  config = default.get_config()
  config.log_every_steps = 7
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 5
  config.num_workers = 2
  config.compare_to = ''
  assert run_record.check_resume(workdir, config) == []


@pytest.mark.parametrize('field,value', [
    ('method', 'kd'), ('seed', 3), ('learning_rate', 0.5), ('model', 'resnet20'),
    ('points', (2, 3)), ('dataset', 'mnist'), ('holdout', 100)])
def test_result_field_refused(tmp_path, field, value):
  """A field that changes the result: one line, both values, nothing changed."""
  workdir = _begun(tmp_path, default.get_config())
  before = _snapshot(workdir)
  config = default.get_config()
  config[field] = value
  with pytest.raises(ValueError) as e:
    run_record.check_resume(workdir, config, allowed=('num_epochs',))
  message = str(e.value)
  old = json.dumps(json.loads(default.get_config().to_json())[field])
  assert f'{field}: {old} there, {json.dumps(json.loads(config.to_json())[field])} now' in message
  assert 'new --workdir' in message and '\n' not in message
  assert '--resume_change' not in message  # Not a field one may change.
  assert _snapshot(workdir) == before


def test_nested_field_refused(tmp_path):
  """A loss weight (a nested field) is named with its path."""
  workdir = _begun(tmp_path, default.get_config())
  config = default.get_config()
  config.loss.kd = 2.0
  with pytest.raises(ValueError, match=r'loss\.kd: 1\.0 there, 2\.0 now'):
    run_record.check_resume(workdir, config)


def test_changeable_field_needs_the_flag(tmp_path):
  """num_epochs: refused with the flag that allows it; allowed when named."""
  workdir = _begun(tmp_path, default.get_config())
  config = default.get_config()
  config.num_epochs = 3.0
  with pytest.raises(ValueError, match='--resume_change=num_epochs'):
    run_record.check_resume(workdir, config)
  assert run_record.check_resume(workdir, config, allowed=['num_epochs']) == [
      {'field': 'num_epochs', 'was': 1.0, 'now': 3.0}]


def test_only_changeable_fields_may_be_allowed(tmp_path):
  """--resume_change=method is itself refused."""
  workdir = _begun(tmp_path, default.get_config())
  with pytest.raises(ValueError, match='--resume_change=method: only'):
    run_record.check_resume(workdir, default.get_config(), allowed=['method'])


def test_older_recording_is_filled(tmp_path):
  """A recording that predates a field compares under the value it ran with."""
  config = default.get_config()
  workdir = _begun(tmp_path, config)
  recorded = run_record.read(workdir)
  del recorded['train_per_class']  # Added later; older runs had 0.
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(recorded, f)
  assert run_record.check_resume(workdir, config) == []
  config.train_per_class = 5
  with pytest.raises(ValueError, match='train_per_class: 0 there, 5 now'):
    run_record.check_resume(workdir, config)


def test_reused_workdir_cannot_relabel(tmp_path, idx_data_dir, teacher_export):
  """The issue's case: a `none` run, re-run as kd with another learning rate,
  is refused; config.json, summary.json and checkpoints stay as they were."""
  workdir = str(tmp_path / 'run')
  config = idx_smoke_config(idx_data_dir, teacher_export, method='none',
                            num_train_steps=4, checkpoint_every_steps=4)
  loop.train_and_evaluate(config, workdir)
  assert run_record.read(workdir)['method'] == 'none'
  before = _snapshot(workdir)
  other = idx_smoke_config(idx_data_dir, teacher_export, method='kd',
                           learning_rate=0.5, num_train_steps=4,
                           checkpoint_every_steps=4)
  with pytest.raises(ValueError) as e:
    loop.train_and_evaluate(other, workdir)
  assert cli.is_user_error(e.value)
  assert 'learning_rate: 0.05 there, 0.5 now' in str(e.value)
  assert 'method: "none" there, "kd" now' in str(e.value)
  assert _snapshot(workdir) == before
  # Training longer is allowed when asked for, and the summary says so.
  longer = idx_smoke_config(idx_data_dir, teacher_export, method='none',
                            num_train_steps=8, checkpoint_every_steps=4)
  summary = loop.train_and_evaluate(longer, workdir,
                                         resume_changes=('num_train_steps',))
  assert summary['steps'] == 8
  assert summary['config_changes'] == [
      {'field': 'num_train_steps', 'was': 4, 'now': 8, 'at_step': 4}]
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['config_changes'] == summary['config_changes']
  assert run_record.read(workdir)['num_train_steps'] == 8


def test_train_py_refuses_in_one_line(tmp_path, idx_data_dir, teacher_export):
  """train.py: exit 2, one stderr line naming the field and the fix."""
  workdir = str(tmp_path / 'run')
  config = idx_smoke_config(idx_data_dir, teacher_export, method='none')
  run_record.write(workdir, config)
  os.makedirs(os.path.join(workdir, 'checkpoints', '12'))
  proc = run_train_py(workdir, *idx_smoke_flags(
      idx_data_dir, teacher_export, method='kd'))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert 'method: "none" there, "kd" now' in lines[0]
  assert 'nothing was changed' in lines[0]


def test_write_json_is_atomic(tmp_path):
  path = str(tmp_path / 'summary.json')
  run_record.write_json(path, {'test_accuracy': 0.5})
  with open(path) as f:
    assert f.read() == '{\n  "test_accuracy": 0.5\n}\n'
  # A record that cannot be written leaves the old file whole, no temporary.
  with pytest.raises(TypeError):
    run_record.write_json(path, {'test_accuracy': object()})
  with open(path) as f:
    assert json.load(f) == {'test_accuracy': 0.5}
  assert os.listdir(tmp_path) == ['summary.json']


def test_write_text_makes_a_missing_folder(tmp_path):
  # A report's --out may name a folder that does not exist yet.
  path = str(tmp_path / 'runs' / 'teacher' / 'stats_swap.md')
  run_record.write_text(path, 'table\n')
  with open(path) as f:
    assert f.read() == 'table\n'
  assert os.listdir(tmp_path / 'runs' / 'teacher') == ['stats_swap.md']


def test_one_run_is_a_copy_with_its_fields():
  config = default.get_config()
  config.compare_to = 'none'
  one = run_record.one_run(config, method='kd', seed=3)
  assert (one.method, one.seed, one.compare_to) == ('kd', 3, '')
  assert (config.seed, config.compare_to) == (default.get_config().seed,
                                              'none')
  one.loss.kd = 123.0  # Nested fields are copies too.
  assert config.loss.kd != 123.0
