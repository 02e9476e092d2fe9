"""Tests of data loading (IDX, tfds mock), batching and augmentation."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from adain_kd_jax.data import augment
from adain_kd_jax.data import batching
from adain_kd_jax.data import fetch
from adain_kd_jax.data import idx
from adain_kd_jax.data import registry
from adain_kd_jax.data import sources
from tests.conftest import run_python


def _write_fake_idx(directory, n_train=6, n_test=4, gz=True):
  """Writes the four Fashion-MNIST-style IDX files; returns their arrays."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  arrays = {}
  for prefix, n in (('train', n_train), ('t10k', n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, (n,), dtype=np.uint8)
    suffix = '.gz' if gz else ''
    idx.write_idx(
        os.path.join(directory, f'{prefix}-images-idx3-ubyte{suffix}'), images)
    idx.write_idx(
        os.path.join(directory, f'{prefix}-labels-idx1-ubyte{suffix}'), labels)
    arrays[prefix] = (images, labels)
  return arrays


def _indexed_set(n):
  """Images whose every pixel is their index, and labels equal to it."""
  images = np.broadcast_to(
      np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 1)).copy()
  return images, np.arange(n, dtype=np.int32)


def _take(iterator, k):
  return [next(iterator) for _ in range(k)]


# ----------------------------------------------------------------------------
# sources.load(source='idx')
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('gz', [True, False])
def test_load_idx(tmp_path, gz):
  """IDX files load as uint8 NHWC images and int32 labels, per split."""
  arrays = _write_fake_idx(tmp_path, gz=gz)
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    images, labels = sources.load(
        'fashion_mnist', split, source='idx', data_dir=str(tmp_path))
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(images[..., 0], arrays[prefix][0])
    np.testing.assert_array_equal(labels, arrays[prefix][1])


def test_load_idx_limit_and_fetch_layout(tmp_path):
  """data_dir may be fetch's --dest; limit keeps the first examples."""
  files = tmp_path / 'usr' / 'share' / 'datasets' / 'fashion-mnist'
  arrays = _write_fake_idx(files)
  images, labels = sources.load(
      'fashion_mnist', 'train', source='idx', data_dir=str(tmp_path), limit=4)
  assert images.shape == (4, 28, 28, 1)
  np.testing.assert_array_equal(labels, arrays['train'][1][:4])


def test_load_idx_env_var(tmp_path, monkeypatch):
  """Without data_dir, $ADAIN_KD_DATA_DIR/fashion-mnist is searched first."""
  _write_fake_idx(tmp_path / 'fashion-mnist', n_test=3)
  monkeypatch.setenv(sources.DATA_DIR_ENV, str(tmp_path))
  assert sources.default_idx_dirs('fashion_mnist')[0] == str(
      tmp_path / 'fashion-mnist')
  images, _ = sources.load('fashion_mnist', 'test', source='idx')
  assert images.shape == (3, 28, 28, 1)


def test_load_idx_missing_files_message(tmp_path):
  """Missing files name the folders searched and how to get the data."""
  with pytest.raises(FileNotFoundError) as e:
    sources.load('fashion_mnist', 'train', source='idx',
                  data_dir=str(tmp_path))
  message = str(e.value)
  assert str(tmp_path) in message
  assert 'python -m adain_kd_jax.data.fetch' in message
  assert 'apt-get install dataset-fashion-mnist' in message
  assert '--config.data_source=tfds' in message
  assert 'config.data_dir' in message


def test_load_rejects_bad_arguments():
  """Unknown names, splits and sources are ValueErrors listing valid ones."""
  with pytest.raises(ValueError, match='cifar100'):
    sources.load('imagenet', 'train', source='tfds')
  with pytest.raises(ValueError, match="'train', 'test'"):
    sources.load('fashion_mnist', 'validation', source='idx')
  with pytest.raises(ValueError, match="'idx', 'tfds'"):
    sources.load('fashion_mnist', 'train', source='hdf5')
  with pytest.raises(ValueError, match='use --config.data_source=tfds'):
    sources.load('cifar100', 'train', source='idx')
  with pytest.raises(ValueError, match='limit'):
    sources.load('fashion_mnist', 'train', source='idx', limit=0)


def test_dataset_info():
  """The table has the published statistics and consistent shapes."""
  assert registry.DATASETS['cifar100'].mean == (0.5071, 0.4865, 0.4409)
  assert registry.DATASETS['cifar100'].num_classes == 100
  for info in registry.DATASETS.values():
    assert len(info.mean) == len(info.std) == info.image_shape[-1]


# ----------------------------------------------------------------------------
# sources.load(source='tfds')
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('name', ['fashion_mnist', 'cifar100'])
def test_load_tfds_mock(name):
  """tfds mock data reads into uint8 NHWC arrays with in-range labels."""
  info = registry.DATASETS[name]
  with tfds.testing.mock_data(num_examples=7):
    images, labels = sources.load(name, 'train', source='tfds')
    limited, _ = sources.load(name, 'test', source='tfds', limit=3)
  assert images.shape == (7,) + info.image_shape
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < info.num_classes
  assert limited.shape == (3,) + info.image_shape


def test_load_tfds_not_prepared(tmp_path, no_network):
  """An empty data_dir with download=False says how to prepare the data."""
  del no_network
  with pytest.raises(sources.DatasetNotPreparedError) as e:
    sources.load('cifar100', 'train', source='tfds', data_dir=str(tmp_path),
                  download=False)
  message = str(e.value)
  assert 'not prepared' in message and str(tmp_path) in message
  assert '--config.download=True' in message


# ----------------------------------------------------------------------------
# split_holdout and fetch
# ----------------------------------------------------------------------------


def test_split_holdout():
  """The holdout is deterministic, disjoint from train, and covers all."""
  images, labels = _indexed_set(20)
  (ti, tl), (hi, hl) = sources.split_holdout(images, labels, 5, seed=3)
  assert len(hl) == 5 and len(tl) == 15
  np.testing.assert_array_equal(np.sort(np.concatenate([tl, hl])),
                                np.arange(20))
  np.testing.assert_array_equal(ti[:, 0, 0, 0], tl)
  np.testing.assert_array_equal(hi[:, 0, 0, 0], hl)
  (_, tl2), (_, hl2) = sources.split_holdout(images, labels, 5, seed=3)
  np.testing.assert_array_equal(hl, hl2)
  np.testing.assert_array_equal(tl, tl2)
  (_, _), (_, hl3) = sources.split_holdout(images, labels, 5, seed=4)
  assert not np.array_equal(hl, hl3)
  with pytest.raises(ValueError, match='num_holdout'):
    sources.split_holdout(images, labels, 20, seed=0)


def test_class_balanced_subset():
  """per_class examples of each class, fixed by the seed, in original order."""
  images, _ = _indexed_set(60)
  labels = np.arange(60, dtype=np.int32) % 3
  x, y = sources.class_balanced_subset(images, labels, 4, seed=1)
  np.testing.assert_array_equal(np.bincount(y), [4, 4, 4])
  index = x[:, 0, 0, 0].astype(np.int64)
  assert np.all(np.diff(index) > 0)  # Original order, no repeats.
  np.testing.assert_array_equal(labels[index], y)
  x2, _ = sources.class_balanced_subset(images, labels, 4, seed=1)
  np.testing.assert_array_equal(x, x2)
  x3, _ = sources.class_balanced_subset(images, labels, 4, seed=2)
  assert not np.array_equal(x, x3)
  with pytest.raises(ValueError, match='class 0 has only 20 training'):
    sources.class_balanced_subset(images, labels, 21, seed=1)


def _in_memory(monkeypatch, **fields):
  """InMemoryData over a 200-example indexed set (10 classes), no files."""
  from adain_kd_jax.data import loader  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  images, _ = _indexed_set(200)
  labels = np.arange(200, dtype=np.int32) % 10
  monkeypatch.setattr(loader.sources, 'load',
                      lambda *a, **k: (images, labels))
  monkeypatch.setattr(loader, 'check_arrays', lambda *a, **k: None)
  config = default.get_config()
  config.update(fields)
  return loader.InMemoryData(config, 0, 1)


def test_validation_split_is_the_same_for_every_run_seed(monkeypatch):
  """holdout_seed fixes the split: seeds 0 and 7 validate on the same images,
  never trained on; the student subset is fixed and class-balanced too."""
  kw = dict(holdout=50, holdout_seed=0, train_per_class=5)
  a = _in_memory(monkeypatch, seed=0, **kw)
  b = _in_memory(monkeypatch, seed=7, **kw)
  val_a = a.splits['val'][1]
  np.testing.assert_array_equal(a.splits['val'][0], b.splits['val'][0])
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert a.num_train == 50 and len(val_a) == 50
  np.testing.assert_array_equal(np.bincount(a.train_labels), [5] * 10)
  train_index = a.train_images[:, 0, 0, 0]
  assert not set(train_index) & set(a.splits['val'][0][:, 0, 0, 0])
  # -1: the run's own seed (as before the fixed split): seeds differ.
  c = _in_memory(monkeypatch, seed=0, holdout=50, holdout_seed=-1)
  d = _in_memory(monkeypatch, seed=7, holdout=50, holdout_seed=-1)
  assert not np.array_equal(c.splits['val'][0], d.splits['val'][0])
  np.testing.assert_array_equal(c.splits['val'][0], a.splits['val'][0])


def test_fetch_data_without_apt(tmp_path, monkeypatch):
  """Without apt-get, fetch explains the alternatives."""
  monkeypatch.setattr(fetch, 'SYSTEM_DIR', str(tmp_path / 'none'))
  monkeypatch.setattr(fetch.shutil, 'which', lambda tool: None)
  with pytest.raises(RuntimeError,
                     match='apt-get.*--config.data_source=tfds'):
    fetch.fetch(str(tmp_path / 'dest'))


def test_fetch_data_already_installed(tmp_path, monkeypatch):
  """If the system folder has the files, fetch does nothing."""
  _write_fake_idx(tmp_path / 'system', n_train=1, n_test=1)
  monkeypatch.setattr(fetch, 'SYSTEM_DIR', str(tmp_path / 'system'))
  assert fetch.fetch(str(tmp_path / 'dest')) == str(tmp_path / 'system')
  assert not (tmp_path / 'dest').exists()


def test_fetch_data_old_command_name():
  """`python -m adain_kd_jax.data.fetch` (the old name) still runs fetch."""
  result = run_python('-m', 'adain_kd_jax.data.fetch', '--help', timeout=60)
  assert result.returncode == 0, result.stderr
  assert 'python -m adain_kd_jax.data.fetch' in result.stdout


# ----------------------------------------------------------------------------
# train_batches / eval_batches
# ----------------------------------------------------------------------------


def test_train_batches_deterministic():
  """The same seed gives the same batches; another seed others."""
  images, labels = _indexed_set(23)
  make = functools.partial(batching.train_batches, images, labels,
                           global_batch_size=5)
  a = _take(make(seed=1), 9)
  b = _take(make(seed=1), 9)
  c = _take(make(seed=2), 9)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['label'], y['label'])
    np.testing.assert_array_equal(x['image'][:, 0, 0, 0], x['label'])
  assert any(not np.array_equal(x['label'], z['label']) for x, z in zip(a, c))
  assert a[0]['image'].dtype == np.uint8 and a[0]['label'].dtype == np.int32


def test_train_batches_reshuffle_and_drop_remainder():
  """Each epoch is a fresh permutation; the remainder is dropped."""
  images, labels = _indexed_set(23)
  spe = batching.steps_per_epoch(23, 5)
  assert spe == 4
  batches = _take(batching.train_batches(images, labels, global_batch_size=5,
                                   seed=0), 3 * spe)
  epochs = [np.concatenate([b['label'] for b in batches[e * spe:(e + 1) * spe]])
            for e in range(3)]
  for e, seen in enumerate(epochs):
    assert len(seen) == 20 and len(set(seen)) == 20  # No repeats in an epoch.
    dropped = np.random.default_rng([0, e]).permutation(23)[20:]
    assert set(seen) | set(dropped) == set(range(23))
  assert not np.array_equal(epochs[0], epochs[1])
  with pytest.raises(ValueError, match='exceeds'):
    batching.train_batches(images, labels, global_batch_size=24, seed=0)


def test_train_batches_resume():
  """Starting at step s gives the batches a run from 0 sees at step s."""
  images, labels = _indexed_set(23)
  make = functools.partial(batching.train_batches, images, labels,
                           global_batch_size=5, seed=7)
  full = _take(make(), 11)
  resumed = _take(make(start_step=6), 5)
  for x, y in zip(full[6:], resumed):
    np.testing.assert_array_equal(x['label'], y['label'])
    np.testing.assert_array_equal(x['image'], y['image'])


def test_train_batches_two_processes():
  """The hosts' slices concatenate to the one-host global batch."""
  images, labels = _indexed_set(30)
  make = functools.partial(batching.train_batches, images, labels,
                           global_batch_size=6, seed=5, start_step=3)
  single = _take(make(), 8)
  host0 = _take(make(process_index=0, process_count=2), 8)
  host1 = _take(make(process_index=1, process_count=2), 8)
  for g, a, b in zip(single, host0, host1):
    assert len(a['label']) == 3
    np.testing.assert_array_equal(
        np.concatenate([a['label'], b['label']]), g['label'])
  with pytest.raises(ValueError, match='multiple of process_count'):
    make(process_index=0, process_count=4)


@pytest.mark.parametrize('n,process_count', [(23, 1), (23, 2), (19, 2),
                                              (24, 3)])
def test_eval_batches_cover_each_example_once(n, process_count):
  """Over all hosts and batches, the mask selects every example once."""
  images, labels = _indexed_set(n)
  seen = []
  num_batches = set()
  for p in range(process_count):
    batches = list(batching.eval_batches(
        images, labels, global_batch_size=6, process_index=p,
        process_count=process_count))
    num_batches.add(len(batches))
    for b in batches:
      assert b['image'].shape == (6 // process_count, 2, 2, 1)
      assert b['mask'].dtype == np.float32
      real = b['mask'] == 1
      assert set(np.unique(b['mask'])) <= {0.0, 1.0}
      np.testing.assert_array_equal(b['image'][real, 0, 0, 0],
                                    b['label'][real])
      assert not b['image'][~real].any()  # Padding is zeros.
      seen.extend(b['label'][real])
  assert num_batches == {batching.num_eval_batches(n, 6)}  # Same on every host.
  assert sorted(seen) == list(range(n))


# ----------------------------------------------------------------------------
# Device-side preprocessing
# ----------------------------------------------------------------------------


def _random_images(n=16, h=6, w=5, c=3, seed=0):
  return np.random.default_rng(seed).integers(1, 256, (n, h, w, c),
                                              dtype=np.uint8)


def test_augment_identity():
  """No padding and no flip returns the images unchanged."""
  images = _random_images()
  out = augment.augment(images, jax.random.key(0), crop_padding=0, flip=False)
  np.testing.assert_array_equal(out, images)


def test_augment_flip():
  """flip=True mirrors some images left-right and leaves the others."""
  images = _random_images(n=32)
  out = np.asarray(augment.augment(images, jax.random.key(0), crop_padding=0,
                              flip=True))
  flipped = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)]
  same = [np.array_equal(o, x) for o, x in zip(out, images)]
  assert all(f != s for f, s in zip(flipped, same))
  assert any(flipped) and any(same)


def test_augment_crop_is_shift_of_padded_image():
  """Each crop is an H x W window of the zero-padded image."""
  images = _random_images(n=32)
  p = 2
  out = np.asarray(augment.augment(images, jax.random.key(1), crop_padding=p,
                              flip=False))
  assert out.shape == images.shape and out.dtype == images.dtype
  padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
  _, h, w, _ = images.shape
  offsets = set()
  for o, x in zip(out, padded):
    matches = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
               if np.array_equal(o, x[dy:dy + h, dx:dx + w])]
    assert len(matches) == 1
    offsets.add(matches[0])
  assert len(offsets) > 1  # The offsets vary from example to example.


def test_augment_deterministic_and_jittable():
  """A fixed key gives a fixed result, the same under jit."""
  images = _random_images()
  aug = functools.partial(augment.augment, crop_padding=3, flip=True)
  a = aug(images, jax.random.key(5))
  b = aug(images, jax.random.key(5))
  c = jax.jit(aug)(images, jax.random.key(5))
  d = aug(images, jax.random.key(6))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)
  assert not np.array_equal(a, d)


def test_normalize_and_preprocess():
  """normalize is (x/255-mean)/std; training pads with black pixels."""
  mean, std = (0.5, 0.25, 0.1), (0.5, 0.2, 0.4)
  images = np.full((16, 4, 4, 3), 255, np.uint8)
  expected_white = (1.0 - np.array(mean)) / np.array(std)
  expected_black = (0.0 - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(
      augment.preprocess_eval(images, mean=mean, std=std),
      np.broadcast_to(expected_white, images.shape), rtol=1e-6)
  train = jax.jit(functools.partial(augment.preprocess_train, mean=mean,
                                    std=std, crop_padding=2, flip=True))
  out = np.asarray(train(images, jax.random.key(0)))
  assert out.dtype == np.float32 and out.shape == images.shape
  is_white = np.isclose(out, expected_white).all(-1)
  is_black = np.isclose(out, expected_black).all(-1)
  assert (is_white | is_black).all() and is_black.any()
  assert jnp.asarray(augment.normalize(images, mean, std)).dtype == jnp.float32
