"""Writes a small data set in each layout a run reads by path, to try them.

  python -m adain_kd_jax.data.examples --folder=DIR --npz=FILE.npz

`--folder`: `DIR/train/<class>/*.png` and `DIR/test/<class>/*.png`, four
classes (`circle`, `cross`, `square`, `stripes`), RGB, half of the images
16x16 and half 20x20 (so the run needs `--config.image_fit`); `--npz`: the
same classes as arrays `x_train`, `y_train`, `x_test`, `y_test` of 16x16
greyscale images. Each class is a shape on noise, learnable in a few steps.
"""

import argparse
import os
import sys
from typing import Optional

import numpy as np

CLASSES = ('circle', 'cross', 'square', 'stripes')


def _image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """One HxW uint8 image of class `label`: its shape on noise."""
  yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1
  shape = {0: xx**2 + yy**2 < 0.5,
           1: (np.abs(xx) < 0.2) | (np.abs(yy) < 0.2),
           2: (np.abs(xx) < 0.6) & (np.abs(yy) < 0.6),
           3: (np.round(xx * 4) % 2) == 0}[label]
  noise = rng.integers(0, 90, (size, size))
  return np.clip(noise + 160 * shape, 0, 255).astype(np.uint8)


def make_arrays(n: int, size: int, seed: int):
  """`n` greyscale `size`x`size` images and their labels (classes cycled)."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % len(CLASSES)
  images = np.stack([_image(int(c), size, rng) for c in labels])
  return images, labels.astype(np.int32)


def write_npz(path: str, n_train: int = 240, n_test: int = 80) -> None:
  """The npz layout: x_train, y_train, x_test, y_test (16x16 greyscale)."""
  x_train, y_train = make_arrays(n_train, 16, seed=0)
  x_test, y_test = make_arrays(n_test, 16, seed=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test,
           y_test=y_test)


def write_folder(root: str, n_train: int = 240, n_test: int = 80) -> None:
  """The folder layout: split/class/i.png, RGB, 16x16 and 20x20 mixed."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for split, n, seed in (('train', n_train, 2), ('test', n_test, 3)):
    rng = np.random.default_rng(seed)
    for i in range(n):
      label = i % len(CLASSES)
      grey = _image(label, 16 if i % 2 else 20, rng)
      rgb = np.stack([grey, grey[::-1], np.full_like(grey, 40 * label)], -1)
      folder = os.path.join(root, split, CLASSES[label])
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(rgb).save(os.path.join(folder, f'{i:04d}.png'))


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--folder', default='',
                      help='write the one-folder-per-class layout here')
  parser.add_argument('--npz', default='', help='write the .npz file here')
  args = parser.parse_args(argv)
  if not args.folder and not args.npz:
    parser.error('give --folder=DIR, --npz=FILE.npz or both.')
  if args.folder:
    write_folder(args.folder)
    print(f'Wrote folder:{args.folder}')
  if args.npz:
    write_npz(args.npz)
    print(f'Wrote npz:{args.npz}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
