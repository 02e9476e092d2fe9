"""Writes tests/data/imagenet_batches.npz: ImageNet-path batches to compare.

  python tests/data/make_imagenet_batches.py

Twenty-one small uint8 images (sizes and orientations vary, one greyscale),
then the first six training batches (global batch 8, seed 3, 16 x 16 crops:
two steps an epoch, so three epochs) and every evaluation batch of both hosts
of a two-host run (global batch 8, resize 20, crop 16), as the ImageNet input
path makes them. `tests/test_imagenet_input.py` checks that the pipeline
still makes exactly these batches.

The stored file was written at commit c6536a0 by this script's first version,
through the hand-written worker pool that the ImageNet input module had
then; since then the script runs the grain pipeline, which reproduces
the file bit for bit.
"""

import os
import sys

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from adain_kd_jax.data import imagenet as ii
from adain_kd_jax.data import sources
# pylint: enable=g-import-not-at-top,wrong-import-position

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   'imagenet_batches.npz')
N, GLOBAL_BATCH, SEED, SIZE, RESIZE, TRAIN_STEPS = 21, 8, 3, 16, 20, 6


def make_images():
  """The source images: uint8 HW(C), of varied shapes, from fixed seeds."""
  images = []
  for i in range(N):
    height, width = 18 + (i % 5) * 3, 22 + (i % 3) * 7
    if i % 2:
      height, width = width, height
    shape = (height, width) if i == 7 else (height, width, 3)
    images.append(np.random.default_rng(i).integers(0, 256, shape, np.uint8))
  return images


def pack(images):
  """Images -> (flat uint8 buffer, [N, 3] shapes with C = 0 for HW)."""
  shapes = np.array([im.shape + (0,) * (3 - im.ndim) for im in images])
  return np.concatenate([im.ravel() for im in images]), shapes


def unpack(flat, shapes):
  """The inverse of `pack`."""
  images, start = [], 0
  for shape in shapes:
    shape = tuple(int(s) for s in shape if s)
    size = int(np.prod(shape))
    images.append(flat[start:start + size].reshape(shape))
    start += size
  return images


def list_source(images):
  """Example i: image i, label 3 * i."""
  return sources.ListSource(images, [3 * i for i in range(len(images))])


def make_batches(source):
  """{name: array} of the training and evaluation batches of `source`."""
  out = {}
  with ii.train_batches(source, global_batch_size=GLOBAL_BATCH, seed=SEED,
                        size=SIZE, num_workers=0) as it:
    train = [next(it) for _ in range(TRAIN_STEPS)]
  for key in ('image', 'label', 'index'):
    out[f'train_{key}'] = np.stack([b[key] for b in train])
  for host in range(2):
    with ii.eval_batches(source, global_batch_size=GLOBAL_BATCH,
                         process_index=host, process_count=2, size=SIZE,
                         resize=RESIZE, num_workers=0) as it:
      evals = list(it)
    for key in ('image', 'label', 'mask', 'index'):
      out[f'eval{host}_{key}'] = np.stack([b[key] for b in evals])
  return out


def main():
  images = make_images()
  flat, shapes = pack(images)
  np.savez_compressed(OUT, source_flat=flat, source_shapes=shapes,
                      **make_batches(list_source(images)))
  print(f'Wrote {OUT}')


if __name__ == '__main__':
  main()
