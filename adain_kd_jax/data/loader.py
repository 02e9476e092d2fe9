"""What the training loop reads: host batches for training and evaluation.

Two kinds of data set, one interface (`open_data` picks by the registry's
`streamed`):
  * `InMemoryData`: the small sets (MNISTs, CIFARs, and sets named by path,
    `own_data`) as uint8 arrays in host memory (`sources.load`,
    `own_data.load`), batched by index (`batching`), optionally
    copied whole to the devices (`config.device_data`).
  * `StreamingData`: a set too large for memory, read example by example by
    the input module its registry row names (`DatasetInfo.input_module`;
    ImageNet's is `imagenet`: JPEGs from `tfds.data_source`, decoded and
    augmented in grain worker processes); the devices only normalise.
Both are stateless functions of (seed, step), so a resumed run reads exactly
what the interrupted one would have.
"""

import importlib
from typing import Any, Callable, Iterator

import numpy as np

from adain_kd_jax.data import batching
from adain_kd_jax.data import own_data
from adain_kd_jax.data import registry
from adain_kd_jax.data import sources


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


def holdout_seed(config) -> int:
  """The seed of the validation split and of the student subset.

  `config.holdout_seed` (fixed, the same split for every run seed), or the
  run's own `config.seed` where it is -1 (how runs before the fixed split
  chose it; configs/from_json.py gives their recordings -1).
  """
  seed = config.holdout_seed
  return config.seed if seed == -1 else seed


class InMemoryData:
  """A small data set held as arrays: train (minus holdout), val, test."""
  streaming = False

  def __init__(self, config, process_index: int, process_count: int):
    self._config = config
    self._host = dict(process_index=process_index,
                      process_count=process_count)
    train, test, own = self._load(config)
    val = None
    if config.holdout:
      if config.holdout >= len(train[0]):
        raise ValueError(
            f'config.holdout={config.holdout} is invalid: it must be smaller '
            f'than the {len(train[0])} training examples.')
      train, val = sources.split_holdout(*train, config.holdout,
                                         holdout_seed(config))
    if config.train_per_class:
      # Chosen from what the holdout left, with the split's own seed: the
      # same subset for every run seed, never a validation image.
      train = sources.class_balanced_subset(*train, config.train_per_class,
                                            holdout_seed(config))
    # A set named by path: its facts from its files, the statistics from
    # the training part alone (the hold-out and the test set left out).
    self.info = (registry.get_info(config.dataset) if own is None
                 else own_data.facts(config.dataset, own, train[0]))
    # What WORKDIR/dataset.json records (None for a registered set).
    self.record = None if own is None else own_data.record(
        self.info, own, len(train[0]), 0 if val is None else len(val[0]))
    self.splits = {'train': train, 'test': test}
    if val is not None:
      self.splits['val'] = val
    for what, (x, y) in self.splits.items():
      check_arrays(x, y, what=f'{config.dataset} {what}',
                   num_classes=self.info.num_classes,
                   image_shape=self.info.image_shape)
    self.train_images, self.train_labels = train
    self.num_train = len(self.train_images)
    self.image_shape = tuple(self.train_images.shape[1:])

  @staticmethod
  def _load(config):
    """(train, test, own_data.Loaded or None), the limits applied."""
    limits = (config.train_limit or None, config.test_limit or None)
    if own_data.parse(config.dataset):
      own = own_data.load(config.dataset, fit=config.image_fit,
                          data_dir=config.data_dir or None,
                          download=config.download)
      train, test = ((x[:n], y[:n]) for (x, y), n in zip(
          (own.train, own.test), limits))
      return train, test, own
    info = registry.get_info(config.dataset)
    kwargs = dict(source=config.data_source,
                  data_dir=config.data_dir or None, download=config.download)
    train, test = (sources.load(config.dataset, split, limit=n, **kwargs)
                   for split, n in zip(info.splits, limits))
    return train, test, None

  def train_batches(self, start_step: int, *,
                    indices_only: bool = False) -> Iterator[dict[str, Any]]:
    """This host's batches from `start_step` on ({'index'} if indices_only)."""
    kwargs = dict(global_batch_size=self._config.batch_size,
                  seed=self._config.seed, start_step=start_step, **self._host)
    if indices_only:  # The devices hold the set and gather there.
      return ({'index': i} for i in batching.train_indices(self.num_train,
                                                           **kwargs))
    return batching.train_batches(self.train_images, self.train_labels,
                                  **kwargs)

  def eval_splits(self) -> dict[str, Callable[[], Iterator[dict]]]:
    """'test' (and 'val') -> a function returning padded, masked batches."""
    return {name: (lambda x=x, y=y: batching.eval_batches(
        x, y, global_batch_size=self._config.eval_batch_size, **self._host))
            for name, (x, y) in self.splits.items() if name != 'train'}

  def close(self) -> None:
    pass


class StreamingData:
  """A streamed set, read by the input module its registry row names."""
  streaming = True

  def __init__(self, config, process_index: int, process_count: int):
    # config_checks.check has refused holdout and device_data here.
    info = self.info = registry.get_info(config.dataset)
    self.record = None
    # Imported by name, by streamed sets only: in-memory runs do without
    # their dependencies (grain for ImageNet).
    self._module = open_input_module(info)
    self._config = config
    self._host = dict(process_index=process_index,
                      process_count=process_count)
    self._size = config.image_size
    self._workers = config.num_workers or None
    open_kw = dict(data_dir=config.data_dir or None,
                   download=config.download,
                   skip_decoding=config.decode_in_workers)
    self._train = self._module.open_source(info.train_split, **open_kw)
    self._test = self._module.open_source(info.test_split, **open_kw)
    self.num_train = len(self._train)
    if config.train_limit:
      self.num_train = min(self.num_train, config.train_limit)
    self.image_shape = (self._size, self._size, info.image_shape[-1])
    self.train_labels = None  # Not read ahead (ImageNet: 1.28M records).
    self._open = []

  def _track(self, iterator):
    self._open.append(iterator)
    return iterator

  def train_batches(self, start_step: int, *, indices_only: bool = False):
    del indices_only  # device_data is refused in __init__.
    source = sources.First(self._train, self.num_train)
    return self._track(self._module.train_batches(
        source, global_batch_size=self._config.batch_size,
        seed=self._config.seed, start_step=start_step,
        num_workers=self._workers, size=self._size, **self._host))

  def eval_splits(self):
    n = len(self._test)
    if self._config.test_limit:
      n = min(n, self._config.test_limit)
    source = sources.First(self._test, n)
    return {'test': lambda: self._track(self._module.eval_batches(
        source, global_batch_size=self._config.eval_batch_size,
        num_workers=self._workers, size=self._size, **self._host))}

  def close(self) -> None:
    for iterator in self._open:
      iterator.close()
    self._open = []


def test_images(config, limit: int | None = None) -> np.ndarray:
  """The first `limit` test images of `config.dataset` (uint8 NHWC), for a
  registered set or one named by path (fitted as the run fitted it)."""
  if own_data.parse(config.dataset):
    images = own_data.load(config.dataset, fit=config.image_fit,
                           data_dir=config.data_dir or None).test[0]
    return images if limit is None else images[:limit]
  info = registry.get_info(config.dataset)
  return sources.load(config.dataset, info.test_split,
                      source=config.data_source,
                      data_dir=config.data_dir or None, download=False,
                      limit=limit)[0]


def open_input_module(info: registry.DatasetInfo):
  """The input module that `info`'s row names, checked for
  `registry.INPUT_MODULE_API`."""
  module = importlib.import_module(info.input_module)
  missing = [name for name in registry.INPUT_MODULE_API
             if not callable(getattr(module, name, None))]
  if missing:
    raise ValueError(
        f'{info.name}: its input module {info.input_module!r} lacks '
        f'{", ".join(missing)} (see registry.INPUT_MODULE_API).')
  return module


def open_data(config, process_index: int, process_count: int):
  """The right kind of data for `config.dataset`."""
  streamed = (not own_data.parse(config.dataset)
              and registry.get_info(config.dataset).streamed)
  kind = StreamingData if streamed else InMemoryData
  return kind(config, process_index, process_count)
