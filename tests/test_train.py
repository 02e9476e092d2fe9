"""train.py end to end on tfds mock data: metrics, summary, comparison, resume."""

import dataclasses
import hashlib
import json
import os
import re

import pytest

from adain_kd_jax.training import summary as summary_lib
from tests.conftest import run_python

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree_hash(directory):
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(directory)):
    for name in sorted(files):
      with open(os.path.join(root, name), 'rb') as f:
        digest.update(name.encode() + f.read())
  return digest.hexdigest()


def _run(workdir, teacher, *overrides):
  """Runs train.py in a subprocess, under tfds mock data; returns stdout."""
  argv = ['train.py', f'--config={_ROOT}/configs/smoke.py',
          f'--workdir={workdir}', '--config.data_source=tfds',
          '--config.teacher=resnet8', f'--config.teacher_checkpoint={teacher}',
          '--config.train_limit=0', '--config.test_limit=0',
          '--config.batch_size=16', '--config.eval_batch_size=40',
          '--config.log_every_steps=2', '--config.checkpoint_every_steps=4',
          *overrides]
  code = ('import sys, tensorflow_datasets as tfds; import train\n'
          'from adain_kd_jax import cli\n'
          'with tfds.testing.mock_data(num_examples=100):\n'
          '  cli.run(train.main, argv=sys.argv)')
  # train.py picks the CPU device count itself.
  return run_python('-c', code, *argv[1:])


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, teacher_export):
  workdir = str(tmp_path_factory.mktemp('run'))
  before = _tree_hash(teacher_export)
  proc = _run(workdir, teacher_export, '--config.num_train_steps=8')
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The comparison printed at the end: both methods' test accuracy.
  assert 'Student resnet8 on fashion_mnist' in proc.stdout
  assert '    adain: test accuracy' in proc.stdout
  assert '     none: test accuracy' in proc.stdout
  assert _tree_hash(teacher_export) == before  # The teacher is read only.
  return workdir


def test_metrics_and_summary(finished_run):
  """metrics.jsonl logs every term; evaluation counts each example once."""
  records = _records(finished_run)
  train_steps = [r['step'] for r in records if r['split'] == 'train']
  assert train_steps == [2, 4, 6, 8]
  for r in records:
    if r['split'] == 'train':
      assert {'loss', 'ce', 'adain', 'accuracy', 'lr'} <= set(r)
  tests = [r for r in records if r['split'] == 'test']
  assert [r['step'] for r in tests] == [6, 8]  # 100 // 16 = 6 steps/epoch.
  assert all(r['count'] == 100 for r in tests)
  with open(os.path.join(finished_run, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['method'] == 'adain' and summary['steps'] == 8
  assert summary['test_accuracy'] == tests[-1]['accuracy']
  assert summary['best_accuracy'] == max(r['accuracy'] for r in tests)
  assert summary['teacher_test_accuracy'] == 0.5
  # The keys are RunSummary's fields, in its order.
  fields = [f.name for f in dataclasses.fields(summary_lib.RunSummary)]
  assert list(summary) == [k for k in fields if k in summary]
  assert set(fields) - set(summary) <= {'val_accuracy', 'export', 'grid',
                                        'predicted_by'}


def test_summary_record_leaves_out_absent_optional_keys():
  """val_accuracy, export and grid are keys only where they apply; the
  other None values are written (null)."""
  summary = summary_lib.RunSummary(
      model='resnet8', method='none', teacher='', dataset='fashion_mnist',
      seed=0, steps=8, epochs=1.0, test_accuracy=0.5, best_accuracy=0.5,
      best_step=8, best_on='test', teacher_test_accuracy=None,
      skipped_steps=0, images_per_sec=None, wall_seconds=1.0,
      wall_seconds_total=1.0, resumes=0, config_changes=[])
  record = summary.to_json()
  assert 'val_accuracy' not in record and 'grid' not in record
  assert 'export' not in record
  assert record['teacher_test_accuracy'] is None
  assert record['images_per_sec'] is None
  summary.val_accuracy, summary.export = 0.25, '/w/export'
  assert list(summary.to_json())[-2:] == ['val_accuracy', 'export']


def test_comparison_run(finished_run):
  """compare_to='none' trains the same student without distillation."""
  with open(os.path.join(finished_run, 'compare_none', 'summary.json')) as f:
    other = json.load(f)
  assert other['method'] == 'none' and other['model'] == 'resnet8'
  assert other['teacher'] == ''
  assert 'adain' not in _records(os.path.join(finished_run, 'compare_none'))[0]


def test_resume_continues_from_the_last_checkpoint(finished_run,
                                                   teacher_export):
  """The same command with more steps (allowed: --resume_change) resumes at
  step 8, runs 9..12 and records the change."""
  proc = _run(finished_run, teacher_export, '--config.num_train_steps=12',
              '--config.compare_to=', '--resume_change=num_train_steps')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'Resuming {finished_run} at step 8.' in proc.stdout
  steps = [r['step'] for r in _records(finished_run) if r['split'] == 'train']
  assert steps == [2, 4, 6, 8, 10, 12]
  with open(os.path.join(finished_run, 'summary.json')) as f:
    assert json.load(f)['config_changes'] == [
        {'field': 'num_train_steps', 'was': 8, 'now': 12, 'at_step': 8}]


def test_bad_override_fails_before_training(tmp_path, teacher_export):
  """An unknown method: one line with the valid ones and the one meant,
  nothing written."""
  workdir = str(tmp_path / 'bad')
  proc = _run(workdir, teacher_export, '--config.method=adian')
  assert proc.returncode == 2
  assert re.fullmatch(r"-c: error: Unknown method 'adian' \(config.method\)"
                      r'\. Valid methods: .*adain_kd.*\. Did you mean '
                      r"'adain'\?\n", proc.stderr)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints'))


def test_mock_config_trains_a_cifar100_row(tmp_path):
  """configs/mock.py: a CIFAR-100 config, mock data, a random teacher."""
  workdir = str(tmp_path / 'mock')
  proc = run_python('train.py', f'--workdir={workdir}',
                    '--config=configs/mock.py:cifar100_distill,'
                    'teacher=resnet8,student=resnet8,method=adain')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ('Mock data: 64 random examples per split '
          '(tfds.testing.mock_data), a random resnet8 teacher; the '
          'accuracies mean nothing.') in proc.stdout
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['dataset'] == 'cifar100' and summary['steps'] == 4
  assert summary['teacher_test_accuracy'] is None
  tests = [r for r in _records(workdir) if r['split'] == 'test']
  assert [r['count'] for r in tests] == [64]
