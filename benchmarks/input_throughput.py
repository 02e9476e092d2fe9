r"""Host throughput of the ImageNet input path, on fake JPEGs made in memory.

  python benchmarks/input_throughput.py [--num_images=256] [--height=375] \
      [--width=500] [--quality=90] [--batch_size=64] [--workers=1,2,0] \
      [--warmup=2] [--batches=12] [--size=224] [--out=FILE.json]

Prints one JSON object to stdout (progress goes to stderr), also written to
--out if given. It times:

  decode_train        `imagenet_preprocess.decode_train` in this process, one
                      image after another (JPEG decode + RandomResizedCrop +
                      flip), over all the images once after one warm-up pass
                      of 16;
  decode_eval         likewise `decode_eval` (resize 256 + centre crop);
  train_batches       `imagenet.train_batches` with each --workers
                      count (0 in the list means all CPUs,
                      `default_num_workers()`): `startup_s` = creating the
                      iterator and getting its first batch, then --warmup
                      more batches untimed, then --batches timed; the
                      consumer takes each batch as soon as it is ready, so
                      after the warm-up the prefetch queue is in steady state.

The source is a `sources.ListSource` of JPEG bytes (examples as
`imagenet.open_source` serves them), so batches go through the same code
path as the real data minus the array_record reads. The images are smooth random
colour fields plus Gaussian noise (std 25; about 112 kB each at the default
size, quality 90), near the JPEG size of ImageNet (about 110 kB at
about 400 x 350); pure noise would compress worse and decode slower.
"""

import io
import os
import platform
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import numpy as np
import PIL
from PIL import Image

from adain_kd_jax.data import imagenet
from adain_kd_jax.data import imagenet_preprocess
from adain_kd_jax.data import sources
from benchmarks import output
# pylint: enable=g-import-not-at-top,wrong-import-position

_NUM_IMAGES = flags.DEFINE_integer('num_images', 256, 'Fake images.')
_HEIGHT = flags.DEFINE_integer('height', 375, 'Image height.')
_WIDTH = flags.DEFINE_integer('width', 500, 'Image width.')
_QUALITY = flags.DEFINE_integer('quality', 90, 'JPEG quality.')
_NOISE = flags.DEFINE_float('noise_std', 25.0,
                            'Pixel noise added to the smooth fields.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Global batch size.')
_WORKERS = flags.DEFINE_list(
    'workers', ['1', '2', '0'],
    'Worker counts for train_batches; 0 = all CPUs (default_num_workers).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed batches after the first.')
_BATCHES = flags.DEFINE_integer('batches', 12, 'Timed batches.')
_SIZE = flags.DEFINE_integer('size', 224, 'Output image size.')
_OUT = flags.DEFINE_string('out', None, 'Also write the JSON here.')


def _log(message):
  print(message, file=sys.stderr, flush=True)


def make_jpegs(n, height, width, quality, noise_std, seed=0):
  """n JPEGs: bicubic-upsampled random 12 x 16 colour fields plus noise."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    field = Image.fromarray(
        rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(field, np.float32) + rng.normal(
        0, noise_std, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
        buf, 'JPEG', quality=quality)
    out.append(buf.getvalue())
  return out


def time_single(fn, images):
  """images/s of fn(image, i) over all images, after 16 warm-up calls."""
  for i, image in enumerate(images[:16]):
    fn(image, i)
  start = time.perf_counter()
  for i, image in enumerate(images):
    fn(image, i)
  elapsed = time.perf_counter() - start
  return {'images_per_s': round(len(images) / elapsed, 1),
          'ms_per_image': round(1e3 * elapsed / len(images), 2)}


def time_train_batches(source, num_workers, batch_size, warmup, batches,
                       size):
  """Startup and steady-state images/s of train_batches."""
  start = time.perf_counter()
  with imagenet.train_batches(
      source, global_batch_size=batch_size, seed=0,
      num_workers=num_workers, size=size) as it:
    next(it)
    startup = time.perf_counter() - start
    for _ in range(warmup):
      next(it)
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(it)
    elapsed = time.perf_counter() - start
    workers = it.num_workers
  assert batch['image'].shape == (batch_size, size, size, 3)
  return {'num_workers': workers,
          'images_per_s': round(batches * batch_size / elapsed, 1),
          'ms_per_batch': round(1e3 * elapsed / batches, 1),
          'startup_s': round(startup, 2),
          'timed_images': batches * batch_size}


def main(argv):
  del argv
  _log(f'Encoding {_NUM_IMAGES.value} JPEGs ...')
  images = make_jpegs(_NUM_IMAGES.value, _HEIGHT.value, _WIDTH.value,
                      _QUALITY.value, _NOISE.value)
  result = {
      'host': {'cpu_count': os.cpu_count(),
               'available_cpus': imagenet.default_num_workers(),
               'python': platform.python_version(),
               'pillow': PIL.__version__,
               'load_average_1m': round(os.getloadavg()[0], 2)},
      'data': {'num_images': len(images),
               'height_width': [_HEIGHT.value, _WIDTH.value],
               'quality': _QUALITY.value,
               'mean_jpeg_kb': round(
                   sum(map(len, images)) / len(images) / 1e3, 1)},
      'config': {'batch_size': _BATCH.value, 'warmup': _WARMUP.value,
                 'batches': _BATCHES.value, 'size': _SIZE.value},
  }
  size = _SIZE.value
  _log('decode_train, one process ...')
  result['decode_train'] = time_single(
      lambda image, i: imagenet_preprocess.decode_train(
          image, imagenet_preprocess.augment_rng(0, 0, i), size), images)
  _log('decode_eval, one process ...')
  result['decode_eval'] = time_single(
      lambda image, i: imagenet_preprocess.decode_eval(image, size), images)
  result['train_batches'] = {}
  seen = set()
  labels = [i % 1000 for i in range(len(images))]
  source = sources.ListSource(images, labels)
  for workers in _WORKERS.value:
    workers = int(workers) or imagenet.default_num_workers()
    if workers in seen:
      continue
    seen.add(workers)
    _log(f'train_batches, {workers} workers ...')
    result['train_batches'][f'workers={workers}'] = time_train_batches(
        source, workers, _BATCH.value, _WARMUP.value, _BATCHES.value, size)
  output.emit(result, _OUT.value)


if __name__ == '__main__':
  app.run(main)
