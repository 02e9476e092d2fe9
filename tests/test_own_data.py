"""Data sets named by path: folder:, npz:, tfds: (data/own_data.py)."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from adain_kd_jax import cli
from adain_kd_jax.data import examples
from adain_kd_jax.data import loader
from adain_kd_jax.data import own_data
from adain_kd_jax.data import sources
from adain_kd_jax.training import loop
from adain_kd_jax.training import run as run_lib
from configs import smoke


@pytest.fixture(scope='module', name='folder')
def _folder(tmp_path_factory):
  """The example folder: 4 classes, RGB PNGs of 16x16 and 20x20."""
  root = str(tmp_path_factory.mktemp('own') / 'images')
  examples.write_folder(root, n_train=48, n_test=16)
  return root


@pytest.fixture(scope='module', name='npz')
def _npz(tmp_path_factory):
  """The example .npz: 4 classes of 16x16 greyscale images."""
  path = str(tmp_path_factory.mktemp('own') / 'set.npz')
  examples.write_npz(path, n_train=96, n_test=32)
  return path


def _config(dataset, **fields):
  """configs/smoke.py without a teacher on `dataset`, 2 steps of 16."""
  config = smoke.get_config()
  config.update(dataset=dataset, method='none', teacher='',
                teacher_checkpoint='', compare_to='', train_limit=0,
                test_limit=0, batch_size=16, eval_batch_size=32,
                num_train_steps=2, log_every_steps=1,
                checkpoint_every_steps=2, **fields)
  return config


def test_parse_names_the_kind_and_leaves_registered_names():
  """KIND:LOCATION splits; a registered name or no colon is not by path."""
  assert own_data.parse('folder:/a/b') == ('folder', '/a/b')
  assert own_data.parse('npz:x.npz') == ('npz', 'x.npz')
  assert own_data.parse('tfds:cifar10') == ('tfds', 'cifar10')
  assert own_data.parse('cifar10') is None
  assert own_data.check_name('hdf5:/x') == (
      "'hdf5' is no kind of data set; use folder:DIR, npz:FILE.npz or "
      'tfds:NAME.')
  assert 'give the npz after the colon' in own_data.check_name('npz:')
  assert own_data.parse_fit('crop:12x10') == ('crop', (12, 10))
  assert own_data.parse_fit('') is None


def test_folder_reads_classes_labels_and_fits_sizes(folder):
  """Class names are the sorted folders; crop and resize give one shape."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  cropped = own_data.load(f'folder:{folder}', fit='crop:16x16')
  assert cropped.class_names == examples.CLASSES
  assert cropped.num_classes == 4
  assert cropped.train[0].shape == (48, 16, 16, 3)
  assert cropped.test[0].shape == (16, 16, 16, 3)
  # Files are read in class order, then name order.
  assert list(cropped.train[1]) == sorted(i % 4 for i in range(48))
  first = os.path.join(folder, 'train', 'circle', '0000.png')  # 20x20.
  pixels = np.asarray(Image.open(first))
  np.testing.assert_array_equal(cropped.train[0][0], pixels[2:18, 2:18])
  resized = own_data.load(f'folder:{folder}', fit='resize:8x8')
  assert resized.train[0].shape == (48, 8, 8, 3)
  expected = np.asarray(Image.fromarray(pixels).resize((8, 8),
                                                       Image.BILINEAR))
  np.testing.assert_array_equal(resized.train[0][0], expected)


def test_npz_reads_arrays_and_adds_the_channel_axis(npz):
  """x_*/y_* come back NHWC uint8 with int32 labels and 4 classes."""
  loaded = own_data.load(f'npz:{npz}')
  with np.load(npz) as arrays:
    np.testing.assert_array_equal(loaded.train[0][..., 0], arrays['x_train'])
    np.testing.assert_array_equal(loaded.test[1], arrays['y_test'])
  assert loaded.train[1].dtype == np.int32 and loaded.num_classes == 4


def test_test_images_read_a_set_named_by_path_as_the_run_fitted_it(
    npz, folder):
  """loader.test_images (the report's statistics figure) takes path-named
  sets: an .npz's first test images, a folder's fitted as the run's."""
  with np.load(npz) as arrays:
    np.testing.assert_array_equal(
        loader.test_images(_config(f'npz:{npz}'), 5)[..., 0],
        arrays['x_test'][:5])
  fitted = own_data.load(f'folder:{folder}', fit='resize:8x8').test[0]
  got = loader.test_images(_config(f'folder:{folder}',
                                   image_fit='resize:8x8'))
  np.testing.assert_array_equal(got, fitted)
  assert got.shape == (16, 8, 8, 3)


def test_holdout_and_statistics_come_from_the_training_part(npz):
  """The validation split is the registered sets' (split_holdout with
  holdout_seed); mean and std are the float64 ones of what is left."""
  config = _config(f'npz:{npz}', holdout=24, holdout_seed=3)
  data = loader.InMemoryData(config, 0, 1)
  with np.load(npz) as arrays:
    x, y = arrays['x_train'][..., None], arrays['y_train']
  (train_x, _), (val_x, val_y) = sources.split_holdout(x, y, 24, 3)
  np.testing.assert_array_equal(data.splits['val'][0], val_x)
  np.testing.assert_array_equal(data.splits['val'][1], val_y)
  reference = train_x.astype(np.float64) / 255.0
  np.testing.assert_allclose(data.info.mean, [reference.mean()], atol=1e-6)
  np.testing.assert_allclose(data.info.std, [reference.std()], atol=1e-6)
  assert data.info.image_shape == (16, 16, 1)
  assert data.record['num_train'] == 72 and data.record['num_val'] == 24
  assert data.record['num_test'] == 32


def test_tfds_set_by_name_on_mock_data():
  """tfds:NAME reads any tfds set; classes from its label feature."""
  with tfds.testing.mock_data(num_examples=12):
    loaded = own_data.load('tfds:cifar10', fit='resize:8x8')
  assert loaded.num_classes == 10 and len(loaded.class_names) == 10
  assert loaded.train[0].shape == (12, 8, 8, 3)
  assert loaded.train[0].dtype == np.uint8


class _Reached(Exception):
  """Raised if a run gets as far as its checkpointer, past every check."""


@pytest.fixture(name='no_compile')
def _no_compile(monkeypatch):
  """A run stops at its checkpointer, after every check, before compiling."""
  def fail(*args, **kwargs):
    raise _Reached('got past the checks')
  monkeypatch.setattr(run_lib.checkpoints, 'RunCheckpointer', fail)


def _write_npz(path, **arrays):
  base = dict(x_train=np.zeros((8, 4, 4), np.uint8), y_train=np.arange(8) % 2,
              x_test=np.zeros((4, 4, 4), np.uint8), y_test=np.arange(4) % 2)
  np.savez(path, **dict(base, **arrays))
  return f'npz:{path}'


def _empty_folder(tmp_path):
  os.makedirs(tmp_path / 'empty' / 'train' / 'cat')
  return f'folder:{tmp_path / "empty"}'


@pytest.mark.parametrize('make,fields,pattern', [
    (_empty_folder, {},
     r'folder:.*/empty: .*/empty/train holds no images; put one folder per '
     r'class there'),
    (lambda tmp, folder: f'folder:{folder}', {},
     r'train images have 2 shapes \(\(16, 16, 3\), \(20, 20, 3\)\); set '
     r'--config.image_fit=resize:HxW or crop:HxW'),
    (lambda tmp, folder: f'folder:{folder}', {'image_fit': 'crop:18x18'},
     r'/train/cross/0001.png is 16x16, smaller than the crop 18x18; use '
     r'--config.image_fit=resize:18x18'),
    (lambda tmp: _write_npz(str(tmp / 'bad.npz'),
                            y_test=np.array([0, 1, 2, 1])), {},
     r'npz:.*bad.npz: test label 2 is out of range: labels must be in '
     r'\[0, 2\) for its 2 classes'),
    (lambda tmp: _write_npz(str(tmp / 'ok.npz')), {'holdout': 8},
     r'config.holdout=8 is invalid: it must be smaller than the 8 training '
     r'examples'),
    (lambda tmp: _write_npz(str(tmp / 'ok.npz')), {'image_fit': 'grow:2'},
     r"config.image_fit='grow:2' is invalid: use resize:HxW or crop:HxW"),
    (lambda tmp: 'npz:' + str(tmp / 'missing.npz'), {},
     r'npz:.*missing.npz: no file .*; give a .npz holding x_train'),
    (lambda tmp: 'zip:/x', {}, r"config.dataset='zip:/x' is invalid: 'zip' "
     r'is no kind of data set'),
    (lambda tmp: 'cifar10', {'image_fit': 'resize:8x8'},
     r"config.image_fit='resize:8x8' is invalid: .*sets named by path"),
], ids=['empty_folder', 'mixed_sizes', 'crop_too_large', 'label_out_of_range',
        'too_few_for_holdout', 'bad_fit', 'missing_file', 'unknown_kind',
        'fit_of_a_registered_set'])
def test_a_bad_data_set_is_one_line_and_writes_nothing(
    make, fields, pattern, tmp_path, folder, no_compile):
  """Each problem of a set named by path: one user error, no workdir."""
  del no_compile
  args = (tmp_path, folder) if make.__code__.co_argcount == 2 else (tmp_path,)
  config = _config(make(*args), data_source='tfds', **fields)
  workdir = str(tmp_path / 'run')
  with pytest.raises(ValueError, match=pattern) as info:
    loop.train_and_evaluate(config, workdir)
  assert '\n' not in str(info.value)
  assert cli.is_user_error(info.value)
  assert not os.path.exists(workdir)


def test_an_npz_set_trains_and_records_its_facts(tmp_path):
  """A run on npz: trains, dataset.json and the summary name it, and a
  resume on changed files is refused in one line."""
  npz = str(tmp_path / 'set.npz')
  examples.write_npz(npz, n_train=96, n_test=32)
  config = _config(f'npz:{npz}', holdout=16, image_fit='resize:12x12')
  workdir = str(tmp_path / 'run')
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['dataset'] == f'npz:{npz}' and summary['steps'] == 2
  assert 'val_accuracy' in summary
  with open(os.path.join(workdir, own_data.DATASET_JSON)) as f:
    record = json.load(f)
  assert record['image_shape'] == [12, 12, 1] and record['num_classes'] == 4
  assert record['num_train'] == 80 and record['num_val'] == 16
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['image_fit'] == 'resize:12x12'
  with open(os.path.join(workdir, own_data.DATASET_JSON)) as f:
    before = f.read()
  with np.load(npz) as arrays:
    changed = dict(arrays, x_train=255 - arrays['x_train'])
  np.savez(npz, **changed)
  os.remove(os.path.join(workdir, 'summary.json'))  # Stopped at a checkpoint.
  with pytest.raises(ValueError, match=r'is not what this run trained on: '
                     r'its mean, std differ .*new --workdir') as info:
    loop.train_and_evaluate(config, workdir)
  assert '\n' not in str(info.value) and cli.is_user_error(info.value)
  with open(os.path.join(workdir, own_data.DATASET_JSON)) as f:
    assert f.read() == before
