"""Where examples come from: IDX files on disk, or `tfds.data_source`.

One interface for every data set of `registry.DATASETS`:

  * `load(name, split, source=...)`: a whole split as uint8 arrays in host
    memory, for the small sets (MNISTs, CIFARs; CIFAR's training set is 150
    MB as uint8), from
      - `idx`: MNIST / Fashion-MNIST IDX files on disk (e.g. from the Debian
        package `dataset-fashion-mnist`, see `adain_kd_jax.data.fetch`).
        Needs neither network nor TensorFlow.
      - `tfds`: any set through `tfds.data_source`, which reads prepared
        array_record files without TensorFlow.
  * `open_tfds(name, split)`: a random-access source, `len(source)` and
    `source[i] -> {'image', 'label', ...}`, read example by example (ImageNet,
    `adain_kd_jax.data.imagenet`); `First(source, n)` limits it, and
    `ListSource` serves examples held in lists the same way.

Loaded sets are indexed by `batching`; streamed ones are read by position.
Either way batches are stateless functions of (seed, step), resumable at any
step.
"""

import os
from typing import Optional, Sequence

import numpy as np

from adain_kd_jax.data import idx
from adain_kd_jax.data import registry

# How to get the files, for the error when they are missing.
_FETCH_HINT = (
    'To get Fashion-MNIST: run `python -m adain_kd_jax.data.fetch` (no root '
    'needed), or `apt-get install dataset-fashion-mnist` on Debian/Ubuntu, '
    "or use tfds: --config.data_source=tfds.")


SOURCES = ('idx', 'tfds')

# IDX files name the test split t10k. Each file may be plain or end in .gz.
_IDX_PREFIX = {'train': 'train', 'test': 't10k'}
IDX_STEMS = tuple(
    f'{prefix}-{kind}-ubyte'
    for prefix in ('train', 't10k')
    for kind in ('images-idx3', 'labels-idx1'))
DATA_DIR_ENV = 'ADAIN_KD_DATA_DIR'
# Where `dpkg-deb -x` puts the files below its destination folder.
_DEB_SUBPATH = ('usr', 'share', 'datasets')


class DatasetNotPreparedError(FileNotFoundError):
  """tfds has no prepared copy of the data set in its data_dir."""


def default_idx_dirs(name: str) -> list[str]:
  """Folders searched for the IDX files of `name` when no data_dir is given.

  In order: `$ADAIN_KD_DATA_DIR/<subdir>` (if set), the Debian package's
  `/usr/share/datasets/<subdir>`, and where `fetch` extracts it,
  `~/.cache/adain_kd_jax/<subdir>/usr/share/datasets/<subdir>`.

  Args:
    name: a data set with IDX files (`fashion_mnist` or `mnist`).

  Returns:
    The candidate folders.
  """
  sub = _idx_subdir(name)
  dirs = []
  if os.environ.get(DATA_DIR_ENV):
    dirs.append(os.path.join(os.environ[DATA_DIR_ENV], sub))
  dirs.append(os.path.join('/', *_DEB_SUBPATH, sub))
  dirs.append(os.path.join(default_fetch_dest(name), *_DEB_SUBPATH, sub))
  return dirs


def default_fetch_dest(name: str = 'fashion_mnist') -> str:
  """Where `fetch` extracts the Debian package by default."""
  return os.path.join(
      os.path.expanduser('~'), '.cache', 'adain_kd_jax', _idx_subdir(name))


def find_idx_file(directory: str, stem: str) -> Optional[str]:
  """Returns `directory/stem[.gz]` if either exists, preferring .gz."""
  for candidate in (stem + '.gz', stem):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def has_idx_files(directory: str) -> bool:
  """Whether `directory` holds all four IDX files (train and test)."""
  return all(find_idx_file(directory, stem) for stem in IDX_STEMS)


def _idx_subdir(name: str) -> str:
  info = registry.get_info(name)
  if info.idx_subdir is None:
    raise ValueError(
        f"config.data_source='idx' supports only {registry.idx_names()}, not "
        f'{name!r}; use --config.data_source=tfds for it.')
  return info.idx_subdir


def _load_idx(name: str, split: str, data_dir: Optional[str],
              limit: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split of MNIST-style IDX files."""
  sub = _idx_subdir(name)
  if data_dir:
    # Also accept the destination given to `fetch --dest`, where
    # dpkg-deb put the files a few folders down.
    candidates = [data_dir, os.path.join(data_dir, *_DEB_SUBPATH, sub)]
  else:
    candidates = default_idx_dirs(name)
  prefix = _IDX_PREFIX[split]
  stems = (f'{prefix}-images-idx3-ubyte', f'{prefix}-labels-idx1-ubyte')
  for directory in candidates:
    paths = [find_idx_file(directory, stem) for stem in stems]
    if all(paths):
      break
  else:
    hint = _FETCH_HINT if name == 'fashion_mnist' else (
        f'Put the {name} IDX files there, or use '
        '--config.data_source=tfds.')
    raise FileNotFoundError(
        f'{name} IDX files {[s + "[.gz]" for s in stems]} not found; looked '
        f'in: {candidates}. Set config.data_dir (--config.data_dir=DIR) to '
        f'their folder, or ${DATA_DIR_ENV} to a folder holding {sub}/. '
        f'{hint}')
  images, labels = (idx.read_idx(p) for p in paths)
  if images.ndim == 3:  # IDX stores (N, H, W); we use NHWC everywhere.
    images = images[..., None]
  shape = registry.get_info(name).image_shape
  if (images.shape[1:] != shape or images.dtype != np.uint8
      or labels.shape != images.shape[:1]):
    raise ValueError(
        f'{paths}: expected uint8 images of shape (N,) + {shape} and N '
        f'labels, got images {images.dtype}{images.shape}, labels '
        f'{labels.shape}. Are these the {name} files?')
  if limit is not None:
    images, labels = images[:limit], labels[:limit]
  return np.ascontiguousarray(images), labels.astype(np.int32)


def open_tfds(name: str, split: str, *, data_dir: Optional[str] = None,
              download: bool = False, decoders=None,
              how_to_prepare: Optional[str] = None):
  """Opens `tfds.data_source(name, split=split)`, which needs no TensorFlow.

  Args:
    name: a tfds data set name (any, not only `registry.DATASETS`).
    split: the split to open.
    data_dir: tfds' data_dir (None: `$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    download: let tfds download and prepare the set if absent.
    decoders: passed to `tfds.data_source` (e.g. `{'image':
      tfds.decode.SkipDecoding()}` to get the encoded image bytes).
    how_to_prepare: what the not-prepared error tells the user to do
      (default: pass download=True, or `tfds build` elsewhere).

  Returns:
    The random-access data source (`len()`, integer indexing).

  Raises:
    DatasetNotPreparedError: no prepared copy in data_dir and download=False.
  """
  # Imported here so that the IDX path and `fetch` do not pay for tfds.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    # try_gcs=False: without network, a GCS look-up retries for minutes.
    return tfds.data_source(
        name, split=split, data_dir=data_dir, download=download,
        decoders=decoders, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    if download:
      raise
    # tfds reports a missing copy in different ways (e.g. complaining about
    # the file format of the absent data), so ask it directly.
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      prepared, where = builder.is_prepared(), builder.data_dir
    except Exception:  # pylint: disable=broad-except
      prepared, where = False, data_dir or '~/tensorflow_datasets'
    if prepared:
      raise
    if how_to_prepare is None:
      how_to_prepare = (
          'Set --config.download=True to let tfds download and prepare it '
          '(needs network access, and TensorFlow to prepare), or prepare it '
          f'elsewhere with `tfds build {name} --file_format=array_record` '
          'and point config.data_dir at that folder; --config.mock_data=256 '
          'tries the config on random data.')
    raise DatasetNotPreparedError(
        f'tfds data set {name!r} is not prepared in {where} (data_dir='
        f'{data_dir!r}), and download=False. {how_to_prepare} '
        "(--traceback shows tfds' own error.)") from e


class ListSource:
  """Examples held in lists, with the random-access interface of `open_tfds`.

  `source[i]` is `{'image': images[i], 'label': labels[i]}`; an image may be
  encoded bytes or a uint8 array (tests, benchmarks, small experiments).
  """

  def __init__(self, images: Sequence, labels: Sequence[int]):
    if len(images) != len(labels):
      raise ValueError(
          f'ListSource: {len(images)} images but {len(labels)} labels.')
    self._images, self._labels = list(images), list(labels)

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, i: int):
    return {'image': self._images[i], 'label': self._labels[i]}


class First:
  """The first `n` examples of a random-access source (smoke runs, tests).

  Picklable if `source` is, so that input worker processes can read it.
  """

  def __init__(self, source, n: int):
    if not 0 <= n <= len(source):
      raise ValueError(f'First: n={n} must be in [0, {len(source)}].')
    self._source, self._n = source, n

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int):
    if not 0 <= i < self._n:
      raise IndexError(i)
    return self._source[i]


def _load_tfds(name: str, split: str, data_dir: Optional[str],
               download: bool,
               limit: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split through `tfds.data_source` (no TensorFlow needed)."""
  source = open_tfds(name, split, data_dir=data_dir, download=download)
  n = len(source) if limit is None else min(limit, len(source))
  shape = registry.get_info(name).image_shape
  images = np.empty((n,) + shape, np.uint8)
  labels = np.empty((n,), np.int32)
  # Integer indexing, one example at a time: `__getitems__` fails under
  # tfds.testing.mock_data, and a one-off read of a small set is cheap.
  for i in range(n):
    example = source[i]
    image = np.asarray(example['image'])
    if image.shape != shape:
      raise ValueError(
          f'tfds {name}/{split} example {i}: image shape {image.shape}, '
          f'expected {shape}.')
    images[i] = image
    labels[i] = example['label']
  return images, labels


def load(name: str, split: str, *, source: str,
         data_dir: Optional[str] = None, download: bool = False,
         limit: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split of a data set into memory.

  Args:
    name: a key of `registry.DATASETS`.
    split: the data set's train or test split name (`'train'`, `'test'`).
    source: `'idx'` (MNIST / Fashion-MNIST files on disk) or `'tfds'`.
    data_dir: for `idx`, the folder holding the four IDX files (None or
      empty: search `default_idx_dirs(name)`); for `tfds`, its data_dir
      (None: tfds' default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    download: `tfds` only: let tfds download and prepare the set if absent.
    limit: if set, only the first `limit` examples (smoke runs, tests).

  Returns:
    `(images_NHWC, labels_N)`: uint8 images and int32 labels.

  Raises:
    ValueError: unknown name, split, source, or a bad limit.
    FileNotFoundError: `idx` files not found (the message says where it
      looked and how to get them).
    DatasetNotPreparedError: `tfds` has no prepared copy and download=False.
  """
  info = registry.get_info(name)
  if split not in info.splits:
    raise ValueError(
        f'Unknown split {split!r} for {name}; valid splits: {info.splits}. '
        '(For a validation set, hold out part of the training set with '
        'sources.split_holdout.)')
  if limit is not None and limit < 1:
    raise ValueError(f'limit must be None or a positive int, got {limit}.')
  if source == 'idx':
    split_kind = 'train' if split == info.train_split else 'test'
    return _load_idx(name, split_kind, data_dir, limit)
  if source == 'tfds':
    return _load_tfds(name, split, data_dir, download, limit)
  raise ValueError(f'Unknown source {source!r}; valid sources: {SOURCES}.')


def split_holdout(
    images: np.ndarray, labels: np.ndarray, num_holdout: int, seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Holds out `num_holdout` random examples, e.g. as a validation set.

  Deterministic in `seed`. Both parts keep the original order of their
  examples, so the result does not depend on anything but the seed.

  Args:
    images: [N, ...] array.
    labels: [N] array.
    num_holdout: how many examples to hold out, 0 <= num_holdout < N.
    seed: seed of the random choice.

  Returns:
    `((train_images, train_labels), (holdout_images, holdout_labels))`.
  """
  n = len(images)
  if len(labels) != n:
    raise ValueError(
        f'split_holdout: {n} images but {len(labels)} labels.')
  if not 0 <= num_holdout < n:
    raise ValueError(
        f'split_holdout: num_holdout={num_holdout} must be in [0, {n}) for '
        f'{n} examples.')
  perm = np.random.default_rng(seed).permutation(n)
  holdout = np.sort(perm[:num_holdout])
  train = np.sort(perm[num_holdout:])
  return (images[train], labels[train]), (images[holdout], labels[holdout])


def class_balanced_subset(
    images: np.ndarray, labels: np.ndarray, per_class: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
  """`per_class` random examples of every class, in their original order.

  Deterministic in `seed` (a fixed subset, the same for every run that names
  the same seed). Each class is drawn from its own stream of the seed, so a
  class's pick does not depend on how many examples the other classes have.

  Args:
    images: [N, ...] array.
    labels: [N] integer array.
    per_class: examples kept of each class (>= 1).
    seed: seed of the random choice.

  Returns:
    `(images, labels)` of `per_class * number of classes present` examples.

  Raises:
    ValueError: a class with fewer than `per_class` examples (naming it).
  """
  if len(labels) != len(images):
    raise ValueError(f'class_balanced_subset: {len(images)} images but '
                     f'{len(labels)} labels.')
  keep = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    if len(members) < per_class:
      raise ValueError(
          f'config.train_per_class={per_class} is invalid: class {int(c)} '
          f'has only {len(members)} training examples; use at most '
          f'{len(members)}.')
    rng = np.random.default_rng([seed, int(c)])
    keep.append(rng.choice(members, per_class, replace=False))
  keep = np.sort(np.concatenate(keep))
  return images[keep], labels[keep]

