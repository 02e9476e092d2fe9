"""ImageNet (ILSVRC2012) input: tfds array_record files, JPEGs decoded in workers.

ImageNet does not fit in memory, so unlike the small sets (arrays indexed by
`batching.gather`) a batch here is a set of record indices into a random-access
source, read by this process and decoded + augmented by a pool of worker
processes, a few batches ahead of the training step.

The batches follow exactly the rule of `batching.train_batches`: step s
reads offset `s % spe` of epoch `s // spe` (remainder dropped), epoch e is
ordered by `batching.epoch_permutation(n, seed, e)`, and each host reads its
contiguous slice of every global batch. The augmentation of the example at
position p of epoch e draws from `imagenet_preprocess.augment_rng(seed, e,
p)`, so a run resumed at any step, or split over any number of hosts or
workers, gets the same pixels.

Reading: `open_source` opens `tfds.data_source('imagenet2012')` (array_record
files, no TensorFlow) with `tfds.decode.SkipDecoding()` for the image, so that
`source[i]['image']` is the encoded JPEG (bytes) and the decoding happens in
the workers; without it tfds decodes in the reading process (an HWC uint8
array). Both are accepted everywhere here.

Preprocessing is torchvision's ImageNet recipe (`imagenet_preprocess`);
normalisation is left to the device, as for the small sets (`augment`).

Workers: a `concurrent.futures.ProcessPoolExecutor`, started once per
iterator, shut down by `close()` / `with` / garbage collection. The default
start method is 'fork' on Linux (elsewhere 'spawn'): it needs no
`if __name__ == '__main__'` guard and starts in milliseconds. A forked worker
runs only numpy and PIL code, never JAX, so JAX's warning that forking a
process with JAX threads may deadlock (about locks those threads hold) is
silenced for that fork. Pass start_method='spawn' or 'forkserver' to avoid
fork; then the caller's script must guard its entry point, as usual for
multiprocessing.
"""

import concurrent.futures
import multiprocessing
import os
import queue
import sys
import threading
import warnings
import weakref
from typing import Optional

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


# ----------------------------------------------------------------------------
# Opening the data.
# ----------------------------------------------------------------------------


def _root_data_dir(data_dir: Optional[str]) -> str:
  """tfds' data_dir root: the argument, $TFDS_DATA_DIR, or its default."""
  return os.path.expanduser(
      data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets')


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
      False, tfds decodes it on reading (HWC uint8), in the reading process.
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
  root = _root_data_dir(data_dir)
  hint = _PREPARE_HINT.format(
      manual_dir=os.path.join(root, 'downloads', 'manual') + os.sep,
      data_dir=root)
  return sources.open_tfds(
      NAME, split, data_dir=data_dir, download=download, decoders=decoders,
      how_to_prepare=hint)


def _decode_chunk(kind: str, images: list, keys: list, indices: list,
                  size: int, resize: int) -> np.ndarray:
  """Worker task: preprocess a few examples, stacked to [k, size, size, 3]."""
  out = np.empty((len(images), size, size, 3), np.uint8)
  for j, (image, key, index) in enumerate(zip(images, keys, indices)):
    try:
      if kind == 'train':
        out[j] = imagenet_preprocess.decode_train(
            image, imagenet_preprocess.augment_rng(*key), size)
      else:
        out[j] = imagenet_preprocess.decode_eval(image, size, resize)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f'ImageNet example {index}: could not decode/preprocess its image '
          f'({type(e).__name__}: {e}).') from e
  return out


# ----------------------------------------------------------------------------
# Batching with worker processes.
# ----------------------------------------------------------------------------


def default_num_workers() -> int:
  """CPUs this process may run on (the affinity mask, else os.cpu_count())."""
  if hasattr(os, 'sched_getaffinity'):
    return max(1, len(os.sched_getaffinity(0)))
  return os.cpu_count() or 1


def _default_start_method() -> str:
  # Not fork on macOS even though it exists there: system libraries are not
  # fork-safe (Python's own default there is spawn).
  return 'fork' if sys.platform.startswith('linux') else 'spawn'


def _noop() -> None:
  return None


class _InlineExecutor:
  """num_workers=0: runs each task at once in the calling (reader) thread."""

  def submit(self, fn, *args):
    future = concurrent.futures.Future()
    try:
      future.set_result(fn(*args))
    except Exception as e:  # pylint: disable=broad-except
      future.set_exception(e)
    return future

  def shutdown(self, wait=True, cancel_futures=False):
    del wait, cancel_futures


def _make_executor(num_workers: int, start_method: Optional[str]):
  """Starts the worker processes now (so that startup errors show here)."""
  if num_workers == 0:
    return _InlineExecutor()
  method = start_method or _default_start_method()
  executor = concurrent.futures.ProcessPoolExecutor(
      max_workers=num_workers,
      mp_context=multiprocessing.get_context(method))
  with warnings.catch_warnings():
    # See the module docstring: the forked workers never run JAX.
    warnings.filterwarnings('ignore', message=r'os\.fork\(\) was called',
                            category=RuntimeWarning)
    # Python >= 3.12 warns likewise about forking a multi-threaded process.
    warnings.filterwarnings('ignore', message=r'.*use of fork\(\) may lead',
                            category=DeprecationWarning)
    # With fork, the first submit starts all the workers, here in the
    # caller's thread rather than later in the reader thread.
    executor.submit(_noop).result()
  return executor


class _Shared:
  """What the reader thread and the iterator share (not the iterator itself,
  so that an abandoned iterator is garbage-collected and shuts down)."""

  def __init__(self, executor, prefetch):
    self.executor = executor
    self.queue = queue.Queue(maxsize=prefetch)
    self.stop = threading.Event()
    self.thread = None


_DONE = object()


def _shutdown(shared: _Shared) -> None:
  shared.stop.set()
  if threading.current_thread() is shared.thread:
    # Garbage collection ran the finalizer in the reader thread itself: it
    # cannot join itself, and stops at its next check of `stop`.
    shared.executor.shutdown(wait=False, cancel_futures=True)
    return
  # Unblock a reader waiting on a full queue, so that it sees `stop`.
  while shared.thread is not None and shared.thread.is_alive():
    try:
      while True:
        shared.queue.get_nowait()
    except queue.Empty:
      pass
    shared.thread.join(timeout=0.05)
  shared.executor.shutdown(wait=True, cancel_futures=True)


def _reader(shared: _Shared, source, plan, kind, local, size, resize,
            chunk) -> None:
  """Reader thread: reads the records of each planned batch, submits them."""

  def put(item) -> bool:
    while not shared.stop.is_set():
      try:
        shared.queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  try:
    for indices, keys in plan:
      if shared.stop.is_set():
        return
      images, labels = [], np.zeros((local,), np.int32)
      for j, index in enumerate(indices):
        example = source[int(index)]
        images.append(example['image'])
        labels[j] = int(example['label'])
      futures = [
          shared.executor.submit(
              _decode_chunk, kind, images[c:c + chunk], keys[c:c + chunk],
              [int(i) for i in indices[c:c + chunk]], size, resize)
          for c in range(0, len(indices), chunk)]
      positions = np.zeros((local,), np.int32)
      positions[:len(indices)] = indices
      if not put((futures, labels, len(indices), positions)):
        return
    put(_DONE)
  except BaseException as e:  # pylint: disable=broad-except
    put(e)


class BatchIterator:
  """Iterator of host-local batches decoded by worker processes.

  Use as a context manager, or call `close()`, to stop the reader thread and
  the workers (garbage collection and interpreter exit also do it).
  """

  def __init__(self, source, plan, *, kind: str, local: int, size: int,
               resize: int, num_workers: Optional[int], prefetch: int,
               start_method: Optional[str], with_mask: bool):
    if num_workers is None:
      num_workers = default_num_workers()
    if num_workers < 0:
      raise ValueError(f'num_workers must be >= 0, got {num_workers}.')
    if prefetch < 1:
      raise ValueError(f'prefetch must be >= 1, got {prefetch}.')
    self._local, self._size, self._with_mask = local, size, with_mask
    self.num_workers = num_workers
    # Two chunks per worker and batch balance the load; bigger chunks would
    # cost fewer messages.
    chunk = max(1, -(-local // (2 * max(num_workers, 1))))
    self._shared = _Shared(_make_executor(num_workers, start_method),
                           prefetch)
    self._finalizer = weakref.finalize(self, _shutdown, self._shared)
    self._shared.thread = threading.Thread(
        target=_reader, name='imagenet_input_reader', daemon=True,
        args=(self._shared, source, plan, kind, local, size, resize, chunk))
    self._shared.thread.start()
    self._closed = False

  def __iter__(self) -> 'BatchIterator':
    return self

  def __next__(self) -> Batch:
    if self._closed:
      raise StopIteration
    item = self._shared.queue.get()
    if item is _DONE:
      self.close()
      raise StopIteration
    if isinstance(item, BaseException):
      self.close()
      raise item
    futures, labels, real, positions = item
    image = np.zeros((self._local, self._size, self._size, 3), np.uint8)
    start = 0
    try:
      for future in futures:
        part = future.result()
        image[start:start + len(part)] = part
        start += len(part)
    except BaseException:
      self.close()
      raise
    # 'index': positions in the split (CRD's memory bank needs them).
    batch = {'image': image, 'label': labels, 'index': positions}
    if self._with_mask:
      mask = np.zeros((self._local,), np.float32)
      mask[:real] = 1.0
      batch['mask'] = mask
    return batch

  def close(self) -> None:
    """Stops reading and shuts the workers down; idempotent."""
    self._closed = True
    self._finalizer()

  def __enter__(self) -> 'BatchIterator':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _train_plan(indices, seed, start_step, spe, global_batch_size, begin):
  """(indices, augmentation keys) of this host's slice, step after step.

  `indices` is `batching.train_indices(...)`; an example's key is
  (seed, epoch, its position in the epoch), the same on every host count.
  """
  for step, idx in enumerate(indices, start_step):
    start = (step % spe) * global_batch_size + begin
    yield idx, [(seed, step // spe, start + j) for j in range(len(idx))]


def _eval_plan(ranges):
  """Indices of this host's slice of every eval batch, in order."""
  for start, stop in ranges:
    indices = np.arange(start, stop)
    yield indices, [None] * len(indices)


def train_batches(source, *, global_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1, num_workers: Optional[int] = None,
                  size: int = 224, prefetch: int = 2,
                  start_method: Optional[str] = None) -> BatchIterator:
  """Infinite iterator of this host's augmented training batches.

  The same batches (indices, order, host slices) as
  `batching.train_batches` over `len(source)` examples; example at
  position p of epoch e is augmented with `augment_rng(seed, e, p)` by
  `imagenet_preprocess.decode_train`, so batches depend only on (seed,
  step), not on `start_step`, `process_count` or `num_workers`.

  Args:
    source: random access examples, `len(source)` and `source[i]` ->
      `{'image': encoded bytes or uint8 HWC array, 'label': int}` (e.g.
      `open_source('train')`).
    global_batch_size: examples per step over all hosts.
    seed: shuffling and augmentation seed (>= 0).
    start_step: the first step to yield (to resume a run).
    process_index: this host's index (`jax.process_index()`).
    process_count: number of hosts (`jax.process_count()`).
    num_workers: decoding processes (None: the CPUs available,
      `default_num_workers()`; 0: decode in a thread of this process).
    size: output height and width.
    prefetch: batches read and queued for decoding ahead of the consumer.
    start_method: multiprocessing start method of the workers (None: 'fork'
      on Linux, else 'spawn'; see the module docstring).

  Returns:
    A `BatchIterator` (close it, or use `with`) of
    `{'image': uint8 [B, size, size, 3], 'label': int32 [B]}`,
    B = global_batch_size // process_count.
  """
  n = len(source)
  spe = batching.steps_per_epoch(n, global_batch_size)
  local = batching.local_batch_size(global_batch_size, process_index,
                                    process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  if seed < 0:
    raise ValueError(f'seed must be >= 0, got {seed}.')
  indices = batching.train_indices(
      n, global_batch_size=global_batch_size, seed=seed,
      start_step=start_step, process_index=process_index,
      process_count=process_count)
  plan = _train_plan(indices, seed, start_step, spe, global_batch_size,
                     local * process_index)
  return BatchIterator(source, plan, kind='train', local=local, size=size,
                       resize=size, num_workers=num_workers,
                       prefetch=prefetch, start_method=start_method,
                       with_mask=False)


def eval_batches(source, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_workers: Optional[int] = None,
                 size: int = 224, resize: int = 256, prefetch: int = 2,
                 start_method: Optional[str] = None) -> BatchIterator:
  """Finite iterator over the whole split in order, this host's slices.

  As `batching.eval_batches`: every batch has the full size, the last
  global batch is padded with zero images, and `'mask'` (1 real, 0 padding)
  counts each example exactly once over all hosts;
  `batching.num_eval_batches(len(source), global_batch_size)` batches
  on every host. Images are preprocessed by
  `imagenet_preprocess.decode_eval`.

  Args:
    source: as for `train_batches` (e.g. `open_source('validation')`).
    global_batch_size: examples per step over all hosts.
    process_index: this host's index.
    process_count: number of hosts.
    num_workers: as for `train_batches`.
    size: output height and width.
    resize: shorter side before the centre crop.
    prefetch: as for `train_batches`.
    start_method: as for `train_batches`.

  Returns:
    A `BatchIterator` of `{'image': uint8 [B, size, size, 3],
    'label': int32 [B], 'mask': float32 [B]}`.
  """
  n = len(source)
  local = batching.local_batch_size(global_batch_size, process_index,
                                    process_count)
  if resize < size:
    raise ValueError(f'resize ({resize}) must be >= size ({size}).')
  plan = _eval_plan(batching.eval_ranges(
      n, global_batch_size=global_batch_size, process_index=process_index,
      process_count=process_count))
  return BatchIterator(source, plan, kind='eval', local=local, size=size,
                       resize=resize, num_workers=num_workers,
                       prefetch=prefetch, start_method=start_method,
                       with_mask=True)
