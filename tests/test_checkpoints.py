"""Run checkpoints and exported teachers: round trips and the mismatch errors."""

import json
import logging
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import models
from adain_kd_jax.training import checkpoints
from tests.conftest import make_teacher_variables


def _abstract(name, num_classes=10, image_shape=(28, 28, 1)):
  model = models.create_model(name, num_classes)
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0),
                         np.zeros((1, *image_shape), np.float32), train=False))


def test_run_checkpoint_round_trip(tmp_path):
  """A saved state and meta dict come back equal; the newest step wins."""
  ckpt = checkpoints.RunCheckpointer(str(tmp_path / 'ckpt'), keep=2)
  assert ckpt.latest_step() is None
  state = {'params': make_teacher_variables()['params'],
           'step': np.int32(7)}
  for step in (3, 7):
    ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state),
              {'best_accuracy': 0.1 * step, 'best_step': step})
  ckpt.wait()
  assert ckpt.latest_step() == 7
  restored, meta = ckpt.restore(jax.eval_shape(lambda: state))
  ckpt.close()
  assert meta == {'best_accuracy': 0.7000000000000001, 'best_step': 7}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b * 7),
               restored, state)


def test_checkpoints_of_another_config_are_an_error_and_kept(tmp_path):
  """Restoring onto other shapes names the problem and deletes nothing."""
  directory = str(tmp_path / 'ckpt')
  ckpt = checkpoints.RunCheckpointer(directory, keep=2)
  state = {'w': jnp.ones((3, 4)), 'b': jnp.zeros((4,))}
  ckpt.save(1, state, {'best_accuracy': 0.5})
  ckpt.save(2, state, {'best_accuracy': 0.6})
  ckpt.wait()
  other = {'w': jax.ShapeDtypeStruct((5, 4), jnp.float32),
           'b': jax.ShapeDtypeStruct((4,), jnp.float32)}
  with pytest.raises(ValueError, match='written by another configuration'):
    ckpt.restore(other)
  assert sorted(int(s) for s in os.listdir(directory) if s.isdigit()) == [1, 2]
  same = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  restored, meta = ckpt.restore(same)
  assert meta['best_accuracy'] == 0.6
  np.testing.assert_array_equal(restored['w'], np.ones((3, 4)))
  ckpt.close()


def test_barrier_prefix_is_one_per_directory(tmp_path, monkeypatch):
  """A run's checkpoints and its export (which save the same last step at
  once) meet at barriers of their own; one directory, however it is
  spelled, has one prefix on every host."""
  monkeypatch.chdir(tmp_path)
  run_dir = checkpoints.barrier_prefix('run/checkpoints')
  assert run_dir == checkpoints.barrier_prefix(
      str(tmp_path / 'run' / 'checkpoints'))
  assert run_dir != checkpoints.barrier_prefix('run/export/variables')
  assert run_dir.startswith('ckpt_') and len(run_dir) == 21


def test_teacher_export_round_trip(teacher_export):
  """load_teacher returns exactly what save_teacher wrote, and its meta."""
  variables, meta = checkpoints.load_teacher(
      teacher_export, model='resnet8', num_classes=10,
      abstract_variables=_abstract('resnet8'))
  jax.tree.map(np.testing.assert_array_equal, variables,
               make_teacher_variables())
  assert meta['model'] == 'resnet8' and meta['test_accuracy'] == 0.5
  assert meta['sha256'] and all(len(h) == 64 for h in meta['sha256'].values())


def test_teacher_load_is_quiet(teacher_export, caplog):
  """Loading a teacher logs no orbax warning and raises no Python warning."""
  with caplog.at_level(logging.WARNING), warnings.catch_warnings():
    warnings.simplefilter('error')
    checkpoints.load_teacher(teacher_export, model='resnet8', num_classes=10,
                             abstract_variables=_abstract('resnet8'))
  assert not [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING]


def test_wrong_architecture_names_both(teacher_export):
  """A resnet8 checkpoint loaded as resnet20 says what it is and the fix."""
  with pytest.raises(ValueError, match=r"is a 'resnet8' but config.teacher "
                     r"is 'resnet20'.*--config.teacher=resnet8"):
    checkpoints.load_teacher(teacher_export, model='resnet20', num_classes=10,
                             abstract_variables=_abstract('resnet20'))


def test_wrong_class_count(teacher_export):
  """A 10-class teacher on a 100-class data set is refused."""
  with pytest.raises(ValueError, match='has 10 classes but the data set has '
                     '100'):
    checkpoints.load_teacher(
        teacher_export, model='resnet8', num_classes=100,
        abstract_variables=_abstract('resnet8', num_classes=100))


def test_wrong_shapes_name_the_variable(tmp_path):
  """Variables whose shapes differ from the model name the first culprit."""
  directory = str(tmp_path / 'export')
  # A 3-channel-input resnet8 exported, loaded for 1-channel input.
  checkpoints.save_teacher(
      directory, make_teacher_variables(image_shape=(28, 28, 3)),
      {'model': 'resnet8', 'num_classes': 10}, step=1)
  with pytest.raises(ValueError, match=r"variable \['params'\]\['stem_conv'\]"
                     r"\['kernel'\] has shape \(3, 3, 3, 16\) in the "
                     r'checkpoint but the model expects \(3, 3, 1, 16\)'):
    checkpoints.load_teacher(directory, model='resnet8', num_classes=10,
                             abstract_variables=_abstract('resnet8'))


def test_corrupted_teacher_is_detected(teacher_export, tmp_path):
  """A changed byte in a variables file fails the recorded checksum."""
  directory = str(tmp_path / 'copy')
  shutil.copytree(teacher_export, directory)
  with open(os.path.join(directory, 'teacher.json')) as f:
    victim = max(json.load(f)['sha256'])  # Any file listed in the manifest.
  path = os.path.join(directory, 'variables', victim)
  with open(path, 'r+b') as f:
    first = f.read(1)
    f.seek(0)
    f.write(bytes([first[0] ^ 0xFF]) if first else b'x')
  with pytest.raises(ValueError, match='is corrupted: 1 file'):
    checkpoints.load_teacher(directory, model='resnet8', num_classes=10,
                             abstract_variables=_abstract('resnet8'))


def test_missing_teacher_says_how_to_make_one(tmp_path):
  """A directory without teacher.json gives the way to produce one."""
  with pytest.raises(FileNotFoundError, match='configs/teacher.py'):
    checkpoints.load_teacher(str(tmp_path), model='resnet8', num_classes=10,
                             abstract_variables=_abstract('resnet8'))


def test_committed_teacher_loads_and_matches_its_checksums():
  """The default config's teacher is intact and is what teacher.json says."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  directory = os.path.join(root, 'teachers', 'fashion_mnist_resnet20')
  variables, meta = checkpoints.load_teacher(
      directory, model='resnet20', num_classes=10,
      abstract_variables=_abstract('resnet20'))
  assert meta['dataset'] == 'fashion_mnist' and meta['test_examples'] == 10000
  assert meta['test_accuracy'] > 0.9
  assert np.isfinite(np.asarray(variables['params']['fc']['kernel'])).all()


def test_a_checkpoint_of_an_older_version_resumes(tmp_path, idx_data_dir,
                                                  teacher_export, caplog):
  """tests/data/checkpoint_v1 (see make_checkpoint_v1.py) resumes today.

  Written by the version before methods became a table of terms, stopped
  after step 2 of 4; resumed here, steps 3 and 4 give what that version's
  own resume gave (round-off of another CPU allowed). Resuming logs no
  orbax warning.
  """
  from adain_kd_jax.training import loop
  from tests.conftest import idx_smoke_config  # pylint: disable=g-import-not-at-top
  from tests.data import make_checkpoint_v1  # pylint: disable=g-import-not-at-top
  source = os.path.join(os.path.dirname(__file__), 'data', 'checkpoint_v1')
  with open(os.path.join(source, 'expected.json')) as f:
    expected = json.load(f)
  workdir = str(tmp_path / 'run')
  shutil.copytree(os.path.join(source, 'checkpoints'),
                  os.path.join(workdir, 'checkpoints'))
  config = idx_smoke_config(
      idx_data_dir, teacher_export,
      **make_checkpoint_v1.settings(idx_data_dir, teacher_export))
  with caplog.at_level(logging.WARNING):
    summary = loop.train_and_evaluate(config, workdir)
  assert not [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING], caplog.text
  assert summary['resumes'] == 1 and summary['steps'] == 4
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    train = [json.loads(line) for line in f]
  train = {str(r['step']): r for r in train if r['split'] == 'train'}
  assert sorted(train) == ['3', '4']
  for step in ('3', '4'):
    np.testing.assert_allclose(train[step]['loss'],
                               expected['train_loss'][step], rtol=1e-4)
    np.testing.assert_allclose(train[step]['adain'],
                               expected['adain'][step], rtol=1e-3)
  np.testing.assert_allclose(summary['test_accuracy'],
                             expected['test_accuracy'], atol=1 / 64)
