"""Tests of the ImageNet input path: decoding, batching, workers, tfds."""

import gc
import io
import multiprocessing
import os
import textwrap

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from adain_kd_jax.data import batching
from adain_kd_jax.data import imagenet as ii
from adain_kd_jax.data import imagenet_preprocess as pre
from adain_kd_jax.data import sources
from tests.conftest import run_python

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jpeg(height, width, seed=0, quality=90, mode='RGB'):
  rng = np.random.default_rng(seed)
  shape = (height, width, 3) if mode == 'RGB' else (height, width)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
      buf, 'JPEG', quality=quality)
  return buf.getvalue()


def _coordinate_image(height, width):
  """uint8 HWC: red = column, green = row (exact up to 256 pixels)."""
  assert height <= 256 and width <= 256
  image = np.zeros((height, width, 3), np.uint8)
  image[..., 0] = np.arange(width)[None, :]
  image[..., 1] = np.arange(height)[:, None]
  return image


def _jpegs(n, height=20, width=24):
  """n small JPEGs (bytes) of alternating orientation."""
  return [_jpeg(height, width, seed=i) if i % 2 else _jpeg(width, height, seed=i)
          for i in range(n)]


def _list_source(n):
  """n small JPEGs; label = index."""
  return sources.ListSource(_jpegs(n), range(n))


def _take(iterator, k):
  return [next(iterator) for _ in range(k)]


def _children():
  return {p.pid for p in multiprocessing.active_children()}


# ----------------------------------------------------------------------------
# Per-example preprocessing.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('height,width', [(80, 100), (200, 300), (300, 200)])
def test_random_resized_crop_params_bounds(height, width):
  """Windows lie inside the image, with area and ratio within the limits."""
  rng = np.random.default_rng(0)
  area = height * width
  for _ in range(500):
    top, left, h, w = pre.random_resized_crop_params(height, width, rng)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    # Bounds up to the rounding of h and w to whole pixels.
    assert 0.08 * area - (h + w + 1) <= h * w <= area
    assert 3 / 4 - 1.5 / h <= w / h <= 4 / 3 + 1.5 / h


def test_random_resized_crop_params_fallback():
  """When no draw fits (a 10 x 1000 strip), the centred 4/3 crop."""
  rng = np.random.default_rng(0)
  assert pre.random_resized_crop_params(10, 1000, rng) == (0, 493, 10, 13)
  assert pre.random_resized_crop_params(1000, 10, rng) == (493, 0, 13, 10)


@pytest.mark.parametrize('height,width', [(80, 100), (200, 300)])
def test_decode_train_jpeg(height, width):
  """JPEG bytes -> uint8 (size, size, 3), a function of the rng's state."""
  image = _jpeg(height, width)
  out = pre.decode_train(image, np.random.default_rng(5))
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(
      out, pre.decode_train(image, np.random.default_rng(5)))
  assert not np.array_equal(out, pre.decode_train(image,
                                                 np.random.default_rng(6)))
  assert pre.decode_train(image, np.random.default_rng(5), size=32).shape == (
      32, 32, 3)
  # Greyscale JPEGs come out as RGB.
  grey = pre.decode_train(_jpeg(height, width, mode='L'),
                         np.random.default_rng(5), size=16)
  assert grey.shape == (16, 16, 3)


def test_decode_train_is_the_drawn_window_and_flip():
  """The output is the window the rng draws, flipped iff the next draw < .5.

  On an image whose red channel is the column and green the row, the output
  of an unflipped crop increases left to right over exactly the window's
  columns and rows (bilinear resizing keeps values within the window's).
  """
  height, width = 120, 200
  image = _coordinate_image(height, width)
  flips = []
  for seed in range(40):
    probe = np.random.default_rng(seed)
    top, left, h, w = pre.random_resized_crop_params(height, width, probe)
    flip = probe.random() < 0.5
    out = pre.decode_train(image, np.random.default_rng(seed), size=32)
    x, y = out[..., 0].astype(int), out[..., 1].astype(int)
    if flip:
      x = x[:, ::-1]
    assert left <= x.min() and x.max() <= left + w - 1
    assert top <= y.min() and y.max() <= top + h - 1
    # The window is covered: corners within a resized pixel of its edges.
    tol = max(w, h) / 32 + 1
    assert x[:, 0].mean() - left <= tol and left + w - 1 - x[:, -1].mean() <= tol
    assert y[0].mean() - top <= tol and top + h - 1 - y[-1].mean() <= tol
    assert (np.diff(x, axis=1) >= 0).all()
    flips.append(flip)
  assert 0 < sum(flips) < len(flips)


def test_decode_eval_center_crop():
  """Shorter side to 256, centre 224 crop; an exact case and a resized one."""
  image = _coordinate_image(256, 256)
  np.testing.assert_array_equal(pre.decode_eval(image), image[16:240, 16:240])
  # 200 x 250 (H x W) -> 256 x 320, crop offsets (16, 48): output pixel
  # (r, c) samples the original at ((r + 16.5) / 1.28 - .5,
  # (c + 48.5) / 1.28 - .5), where the value is the row / column itself.
  image = _coordinate_image(200, 250)
  out = pre.decode_eval(image).astype(float)
  assert out.shape == (224, 224, 3)
  rows, cols = np.arange(224), np.arange(224)
  np.testing.assert_allclose(out[112, :, 0], (cols + 48 + 0.5) / 1.28 - 0.5,
                             atol=1.0)
  np.testing.assert_allclose(out[:, 112, 1], (rows + 16 + 0.5) / 1.28 - 0.5,
                             atol=1.0)
  jpeg = pre.decode_eval(_jpeg(300, 200))
  assert jpeg.shape == (224, 224, 3) and jpeg.dtype == np.uint8
  assert pre.decode_eval(_jpeg(80, 100), size=32, resize=40).shape == (32, 32, 3)
  with pytest.raises(ValueError, match='resize'):
    pre.decode_eval(image, size=224, resize=200)


def test_decode_bad_input():
  with pytest.raises(ValueError, match='uint8'):
    pre.decode_eval(np.zeros((4, 4, 3), np.float32))


# ----------------------------------------------------------------------------
# Batching.
# ----------------------------------------------------------------------------


def test_train_batches_index_rule_and_resume():
  """Same indices as batching.train_batches; resuming is exact."""
  n, gbs = 21, 8  # 2 steps per epoch, so 6 steps cross epochs.
  source = _list_source(n)
  with ii.train_batches(source, global_batch_size=gbs, seed=3, size=16,
                        num_workers=0) as it:
    batches = _take(it, 6)
  reference = _take(batching.train_batches(
      np.zeros((n, 1, 1, 1), np.uint8), np.arange(n), global_batch_size=gbs,
      seed=3), 6)
  for b, r in zip(batches, reference):
    assert b['image'].shape == (gbs, 16, 16, 3) and b['image'].dtype == np.uint8
    assert b['label'].dtype == np.int32
    np.testing.assert_array_equal(b['label'], r['label'])
  # Each position of each epoch has its own crop, even of the same image.
  assert not np.array_equal(batches[0]['image'], batches[2]['image'])
  with ii.train_batches(source, global_batch_size=gbs, seed=3, size=16,
                        start_step=3, num_workers=0) as it:
    resumed = _take(it, 3)
  for b, r in zip(batches[3:], resumed):
    np.testing.assert_array_equal(b['image'], r['image'])
    np.testing.assert_array_equal(b['label'], r['label'])


def test_train_batches_hosts_and_workers():
  """Two hosts' slices concatenate to the one-host batch, with worker
  processes (started after JAX has run) giving the same pixels as none."""
  float(jnp.sum(jnp.arange(4.0)))  # JAX's backend is up, as when training.
  source = _list_source(12)
  kwargs = dict(global_batch_size=4, seed=1, size=16)
  with ii.train_batches(source, num_workers=0, **kwargs) as it:
    whole = _take(it, 4)
  before = _children()
  with ii.train_batches(source, num_workers=2, process_count=2,
                        process_index=0, **kwargs) as first, \
      ii.train_batches(source, num_workers=1, process_count=2,
                       process_index=1, **kwargs) as second:
    assert first.num_workers == 2 and second.num_workers == 1
    for batch in whole:
      a, b = next(first), next(second)
      assert len(_children() - before) == 3
      for key in ('image', 'label', 'index'):
        np.testing.assert_array_equal(batch[key],
                                      np.concatenate([a[key], b[key]]))
  assert not _children() - before


def test_train_batches_bad_arguments():
  source = _list_source(6)
  with pytest.raises(ValueError, match='exceeds'):
    ii.train_batches(source, global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match='multiple'):
    ii.train_batches(source, global_batch_size=3, seed=0, process_count=2)
  with pytest.raises(ValueError, match='start_step'):
    ii.train_batches(source, global_batch_size=2, seed=0, start_step=-1)


def test_eval_batches_cover_each_example_once():
  """Padded, masked batches over two hosts cover every example once."""
  n, gbs = 21, 8
  source = _list_source(n)
  seen = []
  for index in range(2):
    with ii.eval_batches(source, global_batch_size=gbs, process_index=index,
                         process_count=2, num_workers=0, size=16,
                         resize=20) as it:
      batches = list(it)
    assert len(batches) == batching.num_eval_batches(n, gbs)
    for batch in batches:
      assert batch['image'].shape == (4, 16, 16, 3)
      assert batch['mask'].dtype == np.float32
      real = batch['mask'] == 1
      assert not batch['image'][~real].any()
      for label, image in zip(batch['label'][real], batch['image'][real]):
        np.testing.assert_array_equal(
            image, pre.decode_eval(source[label]['image'], 16, 20))
      seen.extend(batch['label'][real])
  assert sorted(seen) == list(range(n))


def test_close_and_garbage_collection_stop_workers():
  before = _children()
  it = ii.train_batches(_list_source(8), global_batch_size=4, seed=0,
                        num_workers=1, size=8)
  next(it)
  assert len(_children() - before) == 1
  it.close()
  it.close()
  assert not _children() - before
  with pytest.raises(StopIteration):
    next(it)
  it = ii.eval_batches(_list_source(8), global_batch_size=4, num_workers=1,
                       size=8, resize=8)
  next(it)
  del it
  gc.collect()
  assert not _children() - before


def test_bad_image_names_the_example():
  images = _jpegs(4)
  images[2] = b'not an image'
  source = sources.ListSource(images, range(4))
  with ii.eval_batches(source, global_batch_size=4, num_workers=1,
                       size=8, resize=8) as it:
    with pytest.raises(ValueError, match='example 2'):
      next(it)


def test_script_exits_without_close(tmp_path):
  """A script that never closes its iterator of worker processes runs and
  exits quietly (no leaked shared memory reported)."""
  script = tmp_path / 'script.py'
  script.write_text(textwrap.dedent('''
      import io, numpy as np
      from PIL import Image
      from adain_kd_jax.data import imagenet as ii

      if __name__ == '__main__':  # Workers are spawned processes.
        buf = io.BytesIO()
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(buf, 'JPEG')
        source = [{'image': buf.getvalue(), 'label': i} for i in range(8)]
        it = ii.train_batches(source, global_batch_size=4, seed=0,
                              num_workers=2, size=8)
        print(next(it)['image'].shape, flush=True)
  '''))
  result = run_python(str(script), timeout=120)
  assert result.returncode == 0, result.stderr
  assert '(4, 8, 8, 3)' in result.stdout
  assert 'leaked' not in result.stderr, result.stderr


# ----------------------------------------------------------------------------
# tfds: the mock, a prepared copy, and a missing one.
# ----------------------------------------------------------------------------


def test_tfds_mock_batches():
  """tfds' mock imagenet2012 (decoded arrays) through both iterators."""
  with tfds.testing.mock_data(num_examples=10):
    source = ii.open_source('train', skip_decoding=False)
    example = source[0]
    assert isinstance(example['image'], np.ndarray)
    assert example['image'].dtype == np.uint8 and example['image'].ndim == 3
    with ii.train_batches(source, global_batch_size=4, seed=0, size=16,
                          num_workers=0) as it:
      batches = _take(it, 3)
    with ii.eval_batches(source, global_batch_size=4, size=16, resize=16,
                         num_workers=0) as it:
      evals = list(it)
  for batch in batches + evals:
    assert batch['image'].shape == (4, 16, 16, 3)
    assert batch['label'].dtype == np.int32
    assert ((0 <= batch['label'])
            & (batch['label'] < ii.INFO.num_classes)).all()
  assert [e['mask'].sum() for e in evals] == [4, 4, 2]


@pytest.fixture
def prepared_data_dir(tmp_path):
  """A tiny imagenet2012 prepared as tfds would (array_record files of
  serialised examples holding JPEGs), written without TensorFlow."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(ii.NAME, data_dir=str(tmp_path),
                         file_format='array_record')
  os.makedirs(builder.data_path)
  features = builder.info.features
  sizes = {'train': 6, 'validation': 5}
  splits = []
  for split, n in sizes.items():
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_path, dataset_name=ii.NAME, split=split,
        filetype_suffix='array_record')
    writer = array_record_module.ArrayRecordWriter(
        os.fspath(template.sharded_filepath(shard_index=0, num_shards=1)),
        'group_size:1')
    for i in range(n):
      writer.write(features.serialize_example({
          'image': _jpeg(40 + i, 30, seed=i), 'label': 10 * i,
          'file_name': f'{split}_{i}.JPEG'}))
    writer.close()
    splits.append(tfds.core.SplitInfo(
        name=split, shard_lengths=[n], num_bytes=0,
        filename_template=template))
  builder.info.set_splits(tfds.core.SplitDict(splits))
  builder.info.write_to_directory(builder.data_path)
  return str(tmp_path)


def test_open_source_prepared(prepared_data_dir):
  """Prepared array_record: JPEG bytes (SkipDecoding), decoded in workers."""
  source = ii.open_source('train', data_dir=prepared_data_dir)
  assert len(source) == 6
  assert isinstance(source[1]['image'], bytes)
  assert source[1]['image'][:2] == b'\xff\xd8'  # JPEG
  decoded = ii.open_source('train', data_dir=prepared_data_dir,
                           skip_decoding=False)
  assert decoded[1]['image'].shape == (41, 30, 3)
  with ii.train_batches(source, global_batch_size=3, seed=0, size=16,
                        num_workers=1) as it:
    batch = next(it)
  assert batch['image'].shape == (3, 16, 16, 3)
  assert set(batch['label']) <= {0, 10, 20, 30, 40, 50}
  val = ii.open_source('validation', data_dir=prepared_data_dir)
  with ii.eval_batches(val, global_batch_size=4, size=16, resize=16,
                       num_workers=1) as it:
    evals = list(it)
  labels = np.concatenate([e['label'][e['mask'] == 1] for e in evals])
  np.testing.assert_array_equal(labels, [0, 10, 20, 30, 40])


def test_open_source_not_prepared(tmp_path, no_network):
  """An empty data_dir says where the tars go and how to prepare them."""
  del no_network
  with pytest.raises(sources.DatasetNotPreparedError) as e:
    ii.open_source('train', data_dir=str(tmp_path))
  message = str(e.value)
  assert 'not prepared' in message
  assert os.path.join(str(tmp_path), 'downloads', 'manual') in message
  assert 'ILSVRC2012_img_train.tar' in message
  assert 'tfds build imagenet2012' in message
  assert '--file_format=array_record' in message
  assert 'requirements-prepare.txt' in message


# ----------------------------------------------------------------------------
# Fixed values: the batches recorded in tests/data (see the script there).
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('num_workers', [0, 2])
def test_batches_match_recorded_values(num_workers):
  """Training and two-host evaluation batches, pixel for pixel."""
  from tests.data import make_imagenet_batches as mib  # pylint: disable=g-import-not-at-top
  recorded = np.load(os.path.join(_ROOT, 'tests', 'data',
                                  'imagenet_batches.npz'))
  images = mib.unpack(recorded['source_flat'], recorded['source_shapes'])
  np.testing.assert_array_equal(images[3], mib.make_images()[3])
  with ii.train_batches(mib.list_source(images), global_batch_size=8, seed=3,
                        size=16, num_workers=num_workers) as it:
    for step in range(6):
      batch = next(it)
      for key in ('image', 'label', 'index'):
        np.testing.assert_array_equal(
            batch[key], recorded[f'train_{key}'][step], err_msg=key)
  made = mib.make_batches(mib.list_source(images))
  for key in made:
    np.testing.assert_array_equal(made[key], recorded[key], err_msg=key)
