"""ImageNet (ILSVRC2012) input on grain: tfds array_record, decoded in workers.

ImageNet does not fit in memory, so unlike the small sets (arrays indexed by
`batching.gather`) a batch here is a set of record positions in a
random-access source, read, decoded and augmented by grain worker processes
a few batches ahead of the training step.

The batches follow exactly the rule of `batching.train_indices`: step s
reads offset `s % spe` of epoch `s // spe` (remainder dropped), epoch e is
ordered by `batching.epoch_permutation(n, seed, e)`, and each host reads its
contiguous slice of every global batch. The augmentation of the example at
position p of epoch e draws from `imagenet_preprocess.augment_rng(seed, e,
p)`, so a run resumed at any step, or split over any number of hosts or
workers, gets the same pixels.

Pipeline: a `grain.MapDataset` whose element k is this host's k-th example
from `start_step` on (a pure function of k: which record, its augmentation
key, the decoded crop), batched to this host's batch size, then
`mp_prefetch` over `num_workers` processes. grain gives each worker whole
batches, round-robin, and hands them back in order, so the batches do not
depend on the number of workers; resuming needs no iterator state, only the
step.

Reading: `open_source` opens `tfds.data_source('imagenet2012')` (array_record
files, no TensorFlow) with `tfds.decode.SkipDecoding()` for the image, so that
`source[i]['image']` is the encoded JPEG (bytes) and the decoding happens in
the workers; without it tfds decodes on reading (an HWC uint8 array). Both are
accepted everywhere here. The source travels to the workers by pickling.

Workers: grain starts them with the 'spawn' method when the iterator is made
(`train_batches`, `eval_batches`) and stops them on `close()`, `with` or
garbage collection. As with any spawned process, a script that makes an
iterator with workers must guard its entry point
(`if __name__ == '__main__':`), as train.py does.
"""

import functools
import os
import sys
from typing import Optional

import grain
import numpy as np

from adain_kd_jax.data import batching
from adain_kd_jax.data import imagenet_preprocess
from adain_kd_jax.data import registry
from adain_kd_jax.data import sources

NAME = 'imagenet2012'
INFO = registry.get_info(NAME)

Batch = dict[str, np.ndarray]

_PREPARE_HINT = (
    'ImageNet cannot be downloaded automatically (download=True does not '
    'help). Once: download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
    'from https://image-net.org (after accepting its terms), put them in '
    '{manual_dir}, then `pip install -r requirements-prepare.txt` (adds '
    'TensorFlow, needed only for this step; a separate virtualenv is fine) '
    'and run `tfds build imagenet2012 --data_dir={data_dir} '
    '--file_format=array_record` (the array_record format is what '
    '`tfds.data_source` reads; about 150 GB of disk and some hours). Training '
    'then reads the prepared files without TensorFlow.')


def open_source(split: str, data_dir: Optional[str] = None,
                download: bool = False, *, skip_decoding: bool = True):
  """Opens one split of tfds' imagenet2012 (array_record, no TensorFlow).

  Args:
    split: `INFO.train_split` or `INFO.test_split` (any tfds split).
    data_dir: tfds' data_dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    download: passed to tfds; ImageNet still needs the manually downloaded
      tars (see the error below), so this only triggers the preparation.
    skip_decoding: if True, `source[i]['image']` is the encoded JPEG (bytes)
      and `train_batches`/`eval_batches` decode it in their workers. If
      False, tfds decodes it on reading (HWC uint8).
      (`tfds.testing.mock_data` cannot serve encoded images without
      TensorFlow, so tests of the mock use False.)

  Returns:
    The data source: `len()`, and `source[i]` -> `{'image', 'label', ...}`.

  Raises:
    sources.DatasetNotPreparedError: not prepared in data_dir and
      download=False; the message says how to prepare it.
  """
  decoders = None
  if skip_decoding:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    decoders = {'image': tfds.decode.SkipDecoding()}
  root = os.path.expanduser(
      data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')
  hint = _PREPARE_HINT.format(
      manual_dir=os.path.join(root, 'downloads', 'manual') + os.sep,
      data_dir=root)
  return sources.open_tfds(
      NAME, split, data_dir=data_dir, download=download, decoders=decoders,
      how_to_prepare=hint)


def default_num_workers() -> int:
  """CPUs this process may run on (the affinity mask, else os.cpu_count())."""
  if hasattr(os, 'sched_getaffinity'):
    return max(1, len(os.sched_getaffinity(0)))
  return os.cpu_count() or 1


# ----------------------------------------------------------------------------
# Element k of the grain MapDataset: picklable, pure functions of k.
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """`batching.epoch_permutation`, once per epoch in each process."""
  return batching.epoch_permutation(n, seed, epoch)


def _example(source, index: int, make_image, size: int) -> Batch:
  """Record `index` preprocessed by `make_image(encoded_or_array)`.

  A failure is reported in 'error' (with a black image) rather than raised,
  so that `BatchIterator` raises it as the same ValueError whether it came
  from a worker process or not.
  """
  example = source[index]
  error = ''
  try:
    image = make_image(example['image'])
  except Exception as e:  # pylint: disable=broad-except
    image = np.zeros((size, size, 3), np.uint8)
    error = (f'ImageNet example {index}: could not decode/preprocess its '
             f'image ({type(e).__name__}: {e}).')
  return {'image': image, 'label': np.int32(example['label']),
          'index': np.int32(index), 'error': error}


class _TrainExample:
  """Host-local example k (k = step * local + j) of the training stream."""

  def __init__(self, source, *, global_batch_size: int, seed: int,
               begin: int, local: int, size: int):
    self._source, self._seed, self._size = source, seed, size
    self._n = len(source)
    self._gbs, self._begin, self._local = global_batch_size, begin, local
    self._spe = batching.steps_per_epoch(self._n, global_batch_size)

  def __call__(self, k: int) -> Batch:
    step, j = divmod(k, self._local)
    epoch, offset = divmod(step, self._spe)
    position = offset * self._gbs + self._begin + j
    index = int(_permutation(self._n, self._seed, epoch)[position])
    rng = imagenet_preprocess.augment_rng(self._seed, epoch, position)
    return _example(
        self._source, index,
        lambda image: imagenet_preprocess.decode_train(image, rng, self._size),
        self._size)


class _EvalExample:
  """Host-local example k of the evaluation pass: real, or padding."""

  def __init__(self, source, ranges, *, local: int, size: int, resize: int):
    self._source, self._ranges, self._local = source, ranges, local
    self._size, self._resize = size, resize

  def __call__(self, k: int) -> Batch:
    b, j = divmod(k, self._local)
    start, stop = self._ranges[b]
    if start + j >= stop:  # Padding of the last global batch.
      return {'image': np.zeros((self._size, self._size, 3), np.uint8),
              'label': np.int32(0), 'index': np.int32(0),
              'mask': np.float32(0), 'error': ''}
    example = _example(
        self._source, start + j,
        lambda image: imagenet_preprocess.decode_eval(
            image, self._size, self._resize), self._size)
    example['mask'] = np.float32(1)
    return example


# ----------------------------------------------------------------------------
# Iterating with grain.
# ----------------------------------------------------------------------------


class BatchIterator:
  """Iterator of host-local batches made by grain (workers or a thread).

  Use as a context manager, or call `close()`, to stop the workers (garbage
  collection and interpreter exit also do it).
  """

  def __init__(self, dataset: grain.MapDataset, *, num_workers: int,
               prefetch: int):
    if num_workers < 0:
      raise ValueError(f'num_workers must be >= 0, got {num_workers}.')
    if prefetch < 1:
      raise ValueError(f'prefetch must be >= 1, got {prefetch}.')
    self.num_workers = num_workers
    if num_workers:
      # Each worker makes whole batches, one after another; batches travel
      # pickled (not in shared memory, whose blocks in flight at close()
      # would be reported as leaked at exit).
      stream = grain.experimental.WithOptionsIterDataset(
          dataset.to_iter_dataset(grain.ReadOptions(prefetch_buffer_size=0)),
          grain.experimental.DatasetOptions(min_shm_size=sys.maxsize))
      stream = stream.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=num_workers, per_worker_buffer_size=prefetch))
    else:
      stream = dataset.to_iter_dataset(grain.ReadOptions(
          num_threads=1, prefetch_buffer_size=prefetch))
    self._iterator = iter(stream)
    if num_workers:
      self._iterator.start_prefetch()  # Starts the workers now.

  def __iter__(self) -> 'BatchIterator':
    return self

  def __next__(self) -> Batch:
    if self._iterator is None:
      raise StopIteration
    try:
      batch = next(self._iterator)
    except BaseException:
      self.close()
      raise
    errors = [e for e in batch.pop('error') if e]
    if errors:
      self.close()
      raise ValueError(errors[0])
    return batch

  def close(self) -> None:
    """Stops the workers; idempotent."""
    # grain stops the workers when its iterator is deleted.
    self._iterator = None

  def __enter__(self) -> 'BatchIterator':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def train_batches(source, *, global_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, num_workers: Optional[int] = None,
                  size: int = 224, prefetch: int = 2) -> BatchIterator:
  """Infinite iterator of this host's augmented training batches.

  The same batches (indices, order, host slices) as `batching.train_batches`
  over `len(source)` examples; the example at position p of epoch e is
  augmented with `augment_rng(seed, e, p)` by `decode_train`, so batches
  depend only on (seed, step), not on `start_step`, `process_count` or
  `num_workers`.

  Args:
    source: random access examples, `len(source)` and `source[i]` ->
      `{'image': encoded bytes or uint8 HWC array, 'label': int}` (e.g.
      `open_source('train')`); picklable if num_workers > 0.
    global_batch_size: examples per step over all hosts.
    seed: shuffling and augmentation seed (>= 0).
    start_step: the first step to yield (to resume a run).
    process_index: this host's index (`jax.process_index()`).
    process_count: number of hosts (`jax.process_count()`).
    num_workers: decoding processes (None: the CPUs available,
      `default_num_workers()`; 0: decode in a thread of this process).
    size: output height and width.
    prefetch: batches each worker (or the thread) makes ahead.

  Returns:
    A `BatchIterator` (close it, or use `with`) of
    `{'image': uint8 [B, size, size, 3], 'label': int32 [B],
    'index': int32 [B]}`, B = global_batch_size // process_count, 'index'
    the records' positions in the split (CRD's memory bank needs them).
  """
  n = len(source)
  batching.steps_per_epoch(n, global_batch_size)  # Checks the batch size.
  local = batching.local_batch_size(global_batch_size, process_index,
                                    process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  if seed < 0:
    raise ValueError(f'seed must be >= 0, got {seed}.')
  example = _TrainExample(source, global_batch_size=global_batch_size,
                          seed=seed, begin=local * process_index,
                          local=local, size=size)
  dataset = grain.MapDataset.range(start_step * local, sys.maxsize).map(
      example).batch(local)
  return BatchIterator(dataset, prefetch=prefetch,
                       num_workers=_num_workers(num_workers))


def eval_batches(source, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_workers: Optional[int] = None,
                 size: int = 224, resize: int = 256,
                 prefetch: int = 2) -> BatchIterator:
  """Finite iterator over the whole split in order, this host's slices.

  As `batching.eval_batches`: every batch has the full size, the last global
  batch is padded with zero images, and `'mask'` (1 real, 0 padding) counts
  each example exactly once over all hosts;
  `batching.num_eval_batches(len(source), global_batch_size)` batches on
  every host. Images are preprocessed by `decode_eval`.

  Args:
    source: as for `train_batches` (e.g. `open_source('validation')`).
    global_batch_size: examples per step over all hosts.
    process_index: this host's index.
    process_count: number of hosts.
    num_workers: as for `train_batches`.
    size: output height and width.
    resize: shorter side before the centre crop.
    prefetch: as for `train_batches`.

  Returns:
    A `BatchIterator` of `{'image': uint8 [B, size, size, 3],
    'label': int32 [B], 'index': int32 [B], 'mask': float32 [B]}` (0 for
    the padding's label and index).
  """
  if resize < size:
    raise ValueError(f'resize ({resize}) must be >= size ({size}).')
  local = batching.local_batch_size(global_batch_size, process_index,
                                    process_count)
  ranges = batching.eval_ranges(len(source),
                                global_batch_size=global_batch_size,
                                process_index=process_index,
                                process_count=process_count)
  example = _EvalExample(source, ranges, local=local, size=size,
                         resize=resize)
  dataset = grain.MapDataset.range(len(ranges) * local).map(example).batch(
      local)
  return BatchIterator(dataset, prefetch=prefetch,
                       num_workers=_num_workers(num_workers))


def _num_workers(num_workers: Optional[int]) -> int:
  return default_num_workers() if num_workers is None else num_workers
