"""Checks that run before any work is wasted: workdir, disk, input arrays.

Everything here raises an error that names the problem and the fix, before
anything is compiled or trained, and leaves no half-written workdir behind.
"""

import os
import shutil
import uuid

import numpy as np


def check_arrays(images, labels, *, what: str, num_classes: int,
                 image_shape) -> None:
  """Validates a split's arrays: uint8 NHWC images, integer labels in range."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim != 4:
    raise ValueError(
        f'{what}: images must have rank 4 (N, H, W, C), got shape '
        f'{images.shape}; add the channel axis (e.g. images[..., None]).')
  if images.dtype != np.uint8:
    raise ValueError(
        f'{what}: images must be uint8 pixels (0..255), got {images.dtype}; '
        'convert them (normalisation happens on the device).')
  if tuple(images.shape[1:]) != tuple(image_shape):
    raise ValueError(
        f'{what}: images have shape {images.shape[1:]} but the data set '
        f'expects {tuple(image_shape)}; check config.dataset.')
  if labels.ndim != 1 or len(labels) != len(images):
    raise ValueError(
        f'{what}: labels must be a vector of {len(images)} integers, got '
        f'shape {labels.shape}.')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{what}: labels must be integers, got {labels.dtype}.')
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'{what}: labels must be in [0, {num_classes}), found '
        f'{labels.min()}..{labels.max()}; is config.dataset right?')


def prepare_workdir(workdir: str, needed_bytes: int) -> None:
  """Creates `workdir` if it can be written and the disk has room.

  Args:
    workdir: the run directory.
    needed_bytes: an estimate of what the run will write (checkpoints).

  Raises:
    OSError: a file, unwritable, or not enough free space; a directory
      created here is removed again.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise FileExistsError(
        f'--workdir={workdir!r} is an existing file, not a directory; choose '
        'a directory (it is created if missing).')
  existed = os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{uuid.uuid4().hex}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise OSError(
        f'Cannot write to --workdir={workdir!r} ({e.strerror or e}); choose a '
        'directory you can write to.') from e
  free = shutil.disk_usage(workdir).free
  if free < needed_bytes:
    if not existed:
      shutil.rmtree(workdir, ignore_errors=True)
    raise OSError(
        f'Only {free / 2**20:.0f} MiB free on the disk of --workdir='
        f'{workdir!r}, but the run needs about {needed_bytes / 2**20:.0f} '
        'MiB for its checkpoints; free some space, lower '
        'config.keep_checkpoints or choose another workdir.')
