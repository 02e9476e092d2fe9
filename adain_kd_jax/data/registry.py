"""Facts about every data set: one `DatasetInfo` each, in `DATASETS`.

The one place that says how many classes a set has, its image shape, its
normalisation statistics, its split names, where its IDX files live and
what serves it: the `config.data_source` values that load it whole into
memory (`sources`), or the input module that streams it (`input_module`,
ImageNet's `adain_kd_jax.data.imagenet`). Everything else (loading,
batching, the streamed pipeline, the config checks) reads it from here: a
source a row does not declare is refused, and a second streamed set is its
input module and its row.
"""

import dataclasses
from typing import Optional

# What a streamed set's input module provides (see `data/loader.py`,
# `StreamingData`): `open_source(split, *, data_dir, download,
# skip_decoding)` -> a random-access source, and `train_batches(source, ...)`
# / `eval_batches(source, ...)` with the signatures of
# `adain_kd_jax.data.imagenet`'s, each returning an iterator with `close()`.
INPUT_MODULE_API = ('open_source', 'train_batches', 'eval_batches')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static facts about one data set.

  Attributes:
    name: the tfds name.
    num_classes: number of labels.
    image_shape: (H, W, C); for a streamed set, that of the images the
      input pipeline makes by default (its crops).
    mean: per-channel mean of the training set, in [0, 1] pixel units.
    std: per-channel standard deviation of the training set, same units.
    train_split: name of the training split.
    test_split: name of the test split.
    idx_subdir: folder name under which the IDX files are searched for by
      default (None: no IDX files for this set).
    sources: the `config.data_source` values that serve the set (for an
      in-memory set, those `sources.load` reads it with; 'idx' needs
      `idx_subdir`); any other is refused.
    input_module: for a set too large for memory, the module that streams
      it (`INPUT_MODULE_API`), imported by name when a run opens it; None
      for a set loaded whole.
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_split: str = 'train'
  test_split: str = 'test'
  idx_subdir: Optional[str] = None
  sources: tuple[str, ...] = ('tfds',)
  input_module: Optional[str] = None

  def __post_init__(self):
    if not self.sources:
      raise ValueError(f'DatasetInfo {self.name!r}: sources is empty.')
    if 'idx' in self.sources and self.idx_subdir is None:
      raise ValueError(f"DatasetInfo {self.name!r}: source 'idx' needs "
                       'idx_subdir.')

  @property
  def streamed(self) -> bool:
    """Read example by example by `input_module` (too large for memory)."""
    return self.input_module is not None

  @property
  def splits(self) -> tuple[str, str]:
    return (self.train_split, self.test_split)


# The commonly published training-set statistics (the ones torchvision
# recipes hard-code), so that results compare with PyTorch baselines.
DATASETS: dict[str, DatasetInfo] = {
    'fashion_mnist': DatasetInfo(
        name='fashion_mnist', num_classes=10, image_shape=(28, 28, 1),
        mean=(0.2860,), std=(0.3530,), idx_subdir='fashion-mnist',
        sources=('idx', 'tfds')),
    'mnist': DatasetInfo(
        name='mnist', num_classes=10, image_shape=(28, 28, 1),
        mean=(0.1307,), std=(0.3081,), idx_subdir='mnist',
        sources=('idx', 'tfds')),
    'cifar10': DatasetInfo(
        name='cifar10', num_classes=10, image_shape=(32, 32, 3),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    # ILSVRC2012, streamed through `adain_kd_jax.data.imagenet`.
    'imagenet2012': DatasetInfo(
        name='imagenet2012', num_classes=1000, image_shape=(224, 224, 3),
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        test_split='validation', input_module='adain_kd_jax.data.imagenet'),
    'cifar100': DatasetInfo(
        name='cifar100', num_classes=100, image_shape=(32, 32, 3),
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


def get_info(name: str) -> DatasetInfo:
  """Returns `DATASETS[name]`, or a ValueError naming the valid names."""
  if name not in DATASETS:
    raise ValueError(
        f'Unknown data set {name!r}; valid names: {sorted(DATASETS)}.')
  return DATASETS[name]


def idx_names() -> list[str]:
  """The data sets that have IDX files (`config.data_source='idx'`)."""
  return sorted(name for name, info in DATASETS.items()
                if 'idx' in info.sources)
