"""What the training loop reads: host batches for training and evaluation.

Two kinds of data set, one interface:
  * `InMemoryData`: the small sets (MNISTs, CIFARs) as uint8 arrays in host
    memory (`datasets.load`), batched by index (`input_pipeline`), optionally
    copied whole to the devices (`config.device_data`).
  * `StreamingData`: ImageNet through `tfds.data_source`, JPEGs decoded and
    augmented (random-resized crop, flip) in worker processes
    (`imagenet_input`); the devices only normalise.
Both are stateless functions of (seed, step), so a resumed run reads exactly
what the interrupted one would have.
"""

from typing import Any, Callable, Iterator

import numpy as np

from adain_kd_jax import datasets
from adain_kd_jax import imagenet_input
from adain_kd_jax import input_pipeline
from adain_kd_jax import preflight

STREAMING = (imagenet_input.NAME,)


class InMemoryData:
  """A small data set held as arrays: train (minus holdout), val, test."""
  streaming = False

  def __init__(self, config, process_index: int, process_count: int):
    self._config = config
    self._host = dict(process_index=process_index,
                      process_count=process_count)
    info = datasets.DATASETS[config.dataset]
    kwargs = dict(source=config.data_source,
                  data_dir=config.data_dir or None, download=config.download)
    train = datasets.load(config.dataset, info.train_split,
                          limit=config.train_limit or None, **kwargs)
    test = datasets.load(config.dataset, info.test_split,
                         limit=config.test_limit or None, **kwargs)
    val = None
    if config.holdout:
      if config.holdout >= len(train[0]):
        raise ValueError(
            f'config.holdout={config.holdout} is invalid: it must be smaller '
            f'than the {len(train[0])} training examples.')
      train, val = datasets.split_holdout(*train, config.holdout,
                                          config.seed)
    self.splits = {'train': train, 'test': test}
    if val is not None:
      self.splits['val'] = val
    for what, (x, y) in self.splits.items():
      preflight.check_arrays(x, y, what=f'{config.dataset} {what}',
                             num_classes=info.num_classes,
                             image_shape=info.image_shape)
    self.train_images, self.train_labels = train
    self.num_train = len(self.train_images)
    self.image_shape = tuple(self.train_images.shape[1:])

  def train_batches(self, start_step: int, *,
                    indices_only: bool = False) -> Iterator[dict[str, Any]]:
    """This host's batches from `start_step` on ({'index'} if indices_only)."""
    indices = input_pipeline.train_indices(
        self.num_train, global_batch_size=self._config.batch_size,
        seed=self._config.seed, start_step=start_step, **self._host)
    for i in indices:
      if indices_only:
        yield {'index': i}
      else:
        yield {'image': self.train_images[i],
               'label': self.train_labels[i].astype(np.int32), 'index': i}

  def eval_splits(self) -> dict[str, Callable[[], Iterator[dict]]]:
    """'test' (and 'val') -> a function returning padded, masked batches."""
    return {name: (lambda x=x, y=y: input_pipeline.eval_batches(
        x, y, global_batch_size=self._config.eval_batch_size, **self._host))
            for name, (x, y) in self.splits.items() if name != 'train'}

  def close(self) -> None:
    pass


class StreamingData:
  """ImageNet: decoded and augmented on the host by worker processes."""
  streaming = True

  def __init__(self, config, process_index: int, process_count: int):
    for field in ('holdout', 'device_data'):
      if config[field]:
        raise ValueError(
            f'config.{field}={config[field]!r} is invalid for '
            f'{config.dataset}: it is for the in-memory data sets; set it '
            'to 0/False.')
    self._config = config
    self._host = dict(process_index=process_index,
                      process_count=process_count)
    self._size = int(config.get('image_size', 224))
    self._workers = int(config.get('num_workers', 0)) or None
    skip = bool(config.get('decode_in_workers', True))
    open_kw = dict(data_dir=config.data_dir or None,
                   download=config.download, skip_decoding=skip)
    self._train = imagenet_input.open_source(imagenet_input.TRAIN_SPLIT,
                                             **open_kw)
    self._test = imagenet_input.open_source(imagenet_input.EVAL_SPLIT,
                                            **open_kw)
    self.num_train = len(self._train)
    if config.train_limit:
      self.num_train = min(self.num_train, config.train_limit)
    self.image_shape = (self._size, self._size, 3)
    self.train_labels = None  # Not read ahead (1.28M records).
    self._open = []

  def _track(self, iterator):
    self._open.append(iterator)
    return iterator

  def train_batches(self, start_step: int, *, indices_only: bool = False):
    del indices_only  # device_data is refused in __init__.
    source = _Limited(self._train, self.num_train)
    return self._track(imagenet_input.train_batches(
        source, global_batch_size=self._config.batch_size,
        seed=self._config.seed, start_step=start_step,
        num_workers=self._workers, size=self._size, **self._host))

  def eval_splits(self):
    n = len(self._test)
    if self._config.test_limit:
      n = min(n, self._config.test_limit)
    source = _Limited(self._test, n)
    return {'test': lambda: self._track(imagenet_input.eval_batches(
        source, global_batch_size=self._config.eval_batch_size,
        num_workers=self._workers, size=self._size, **self._host))}

  def close(self) -> None:
    for iterator in self._open:
      iterator.close()
    self._open = []


class _Limited:
  """The first n records of a data source (smoke runs, tests)."""

  def __init__(self, source, n: int):
    self._source, self._n = source, n

  def __len__(self):
    return self._n

  def __getitem__(self, i):
    if not 0 <= i < self._n:
      raise IndexError(i)
    return self._source[i]


def open_data(config, process_index: int, process_count: int):
  """The right kind of data for `config.dataset`."""
  kind = StreamingData if config.dataset in STREAMING else InMemoryData
  return kind(config, process_index, process_count)
