"""A tiny streamed data set for the tests: one .npy file per example.

An input module as `registry.INPUT_MODULE_API` asks (what a second streamed
set provides besides its registry row): `open_source` reads a folder that
`write(directory, images, labels)` made, one example per `source[i]`, and
`train_batches` / `eval_batches` follow `batching`'s rule of (seed, step).
`DIRECTORY` is where the test put the files (the role of tfds' data_dir).
"""

import os

import numpy as np

from adain_kd_jax.data import batching

DIRECTORY = ''  # Set by the test that writes the files.


def write(directory: str, split: str, images: np.ndarray,
          labels: np.ndarray) -> None:
  """`directory/split/{i}.npy` per image and `labels.npy`."""
  folder = os.path.join(directory, split)
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    np.save(os.path.join(folder, f'{i}.npy'), image)
  np.save(os.path.join(folder, 'labels.npy'), labels.astype(np.int32))


class _Source:
  """Example i read from its own file when asked for."""

  def __init__(self, folder: str):
    self._folder = folder
    self._labels = np.load(os.path.join(folder, 'labels.npy'))

  def __len__(self) -> int:
    return len(self._labels)

  def __getitem__(self, i: int):
    image = np.load(os.path.join(self._folder, f'{i}.npy'))
    return {'image': image, 'label': self._labels[i]}


def open_source(split, *, data_dir=None, download=False,
                skip_decoding=False):
  """One split of the files under `data_dir` (or `DIRECTORY`)."""
  del download, skip_decoding
  return _Source(os.path.join(data_dir or DIRECTORY, split))


def _read(source, indices, size):
  images = np.stack([source[int(i)]['image'] for i in indices])
  labels = np.array([source[int(i)]['label'] for i in indices], np.int32)
  assert images.shape[1:3] == (size, size), images.shape
  return images, labels


def _train(source, indices, size):
  for step_indices in indices:
    images, labels = _read(source, step_indices, size)
    yield {'image': images, 'label': labels,
           'index': np.asarray(step_indices, np.int32)}


def train_batches(source, *, global_batch_size, seed, start_step=0,
                  process_index=0, process_count=1, num_workers=None,
                  size=8):
  """This host's training batches from `start_step` on, read per example."""
  del num_workers
  indices = batching.train_indices(
      len(source), global_batch_size=global_batch_size, seed=seed,
      start_step=start_step, process_index=process_index,
      process_count=process_count)
  return _train(source, indices, size)


def eval_batches(source, *, global_batch_size, process_index=0,
                 process_count=1, num_workers=None, size=8):
  """The split in order, padded and masked as `batching.eval_batches`."""
  del num_workers
  images, labels = _read(source, range(len(source)), size)
  return batching.eval_batches(
      images, labels, global_batch_size=global_batch_size,
      process_index=process_index, process_count=process_count)
