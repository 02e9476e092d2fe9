"""Data sets named by where they are: a folder of images, a .npz, a tfds set.

`config.dataset` names one without code:
  * `folder:DIR`: `DIR/train/<class>/*` and `DIR/test/<class>/*`, one folder
    per class (the class names are the training folders' names, sorted);
    any image file PIL reads (PNG, JPEG, ...), greyscale or RGB.
  * `npz:FILE.npz`: arrays `x_train`, `y_train`, `x_test`, `y_test` (images
    uint8 `[N, H, W]` or `[N, H, W, C]`, integer labels), optionally
    `num_classes`.
  * `tfds:NAME`: any tfds set prepared elsewhere (`tfds build NAME
    --file_format=array_record`), its 'train' and 'test' splits, read
    through `tfds.data_source` from `config.data_dir`.

Its kind is its source (`config.data_source` names the registered sets'
sources). Images of another size are fitted as `config.image_fit` says
(`resize:HxW` or centre `crop:HxW`; '' = they must all share one size).
The facts a registry row states by hand (classes, image shape, mean and std)
are computed once per run by `facts`, the statistics from the training part
only (after the validation hold-out), and recorded in WORKDIR/dataset.json.
Every problem is one line naming the data set and the fix.
"""

import dataclasses
import json
import os
from typing import Optional

import numpy as np

from adain_kd_jax.data import registry

KINDS = ('folder', 'npz', 'tfds')
FITS = ('resize', 'crop')
DATASET_JSON = 'dataset.json'
_SPLITS = ('train', 'test')
_NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')

Split = tuple[np.ndarray, np.ndarray]


def parse(name: str) -> Optional[tuple[str, str]]:
  """('folder', 'DIR') for 'folder:DIR' etc.; None for a registered name."""
  kind, sep, location = name.partition(':')
  if not sep or kind not in KINDS:
    return None
  return kind, location


def check_name(name: str) -> Optional[str]:
  """Why `name`, of the form KIND:LOCATION, is invalid (None if it is fine
  or not of that form)."""
  kind, sep, location = name.partition(':')
  if not sep:
    return None
  if kind not in KINDS:
    return (f'{kind!r} is no kind of data set; use folder:DIR, '
            'npz:FILE.npz or tfds:NAME.')
  if not location:
    return f'give the {kind} after the colon (e.g. {kind}:{_EXAMPLE[kind]}).'
  return None


_EXAMPLE = {'folder': '/data/my_images', 'npz': '/data/my_set.npz',
            'tfds': 'cifar10'}


def parse_fit(fit: str) -> Optional[tuple[str, tuple[int, int]]]:
  """'resize:32x32' -> ('resize', (32, 32)); '' -> None; ValueError else."""
  if not fit:
    return None
  how, _, size = fit.partition(':')
  try:
    h, w = (int(s) for s in size.split('x'))
  except ValueError:
    h = w = 0
  if how not in FITS or h < 1 or w < 1:
    raise ValueError(
        f'config.image_fit={fit!r} is invalid: use resize:HxW or crop:HxW '
        "(e.g. resize:32x32), or '' for images of one size.")
  return how, (h, w)


@dataclasses.dataclass(frozen=True)
class Loaded:
  """Both splits of a data set named by path, and what the files say."""
  train: Split
  test: Split
  num_classes: int
  class_names: tuple[str, ...]


def load(name: str, *, fit: str = '', data_dir: Optional[str] = None,
         download: bool = False) -> Loaded:
  """Reads both splits of `name` (KIND:LOCATION) into uint8 arrays."""
  kind, location = parse(name)
  fitting = parse_fit(fit)
  if kind == 'folder':
    return _folder(name, os.path.expanduser(location), fitting)
  if kind == 'npz':
    return _npz(name, os.path.expanduser(location), fitting)
  return _tfds(name, location, fitting, data_dir, download)


def facts(name: str, loaded: Loaded, train_images: np.ndarray
          ) -> registry.DatasetInfo:
  """The registry row of `name`: classes and image shape from the files,
  mean and std (per channel, [0, 1] units) from `train_images`, the
  training part after the hold-out."""
  pixels = train_images.reshape(-1, train_images.shape[-1]) / 255.0
  kind, _ = parse(name)
  return registry.DatasetInfo(
      name=name, num_classes=loaded.num_classes,
      image_shape=tuple(int(d) for d in train_images.shape[1:]),
      mean=tuple(round(float(m), 6) for m in pixels.mean(axis=0)),
      std=tuple(round(max(float(s), 1e-6), 6) for s in pixels.std(axis=0)),
      sources=(kind,))


def record(info: registry.DatasetInfo, loaded: Loaded, num_train: int,
           num_val: int) -> dict:
  """What WORKDIR/dataset.json holds for a data set named by path."""
  return {'dataset': info.name, 'num_classes': info.num_classes,
          'class_names': list(loaded.class_names),
          'image_shape': list(info.image_shape), 'mean': list(info.mean),
          'std': list(info.std), 'num_train': num_train,
          'num_val': num_val, 'num_test': len(loaded.test[1]),
          'statistics_from': 'train (after the validation hold-out)'}


def check_unchanged(workdir: str, record: dict) -> None:
  """Refuses to resume the run in `workdir` if its data set's files changed
  since its WORKDIR/dataset.json (`record`: what they give now)."""
  try:
    with open(os.path.join(workdir, DATASET_JSON)) as f:
      recorded = json.load(f)
  except (OSError, ValueError):
    return  # Nothing (readable) recorded.
  if recorded == record:
    return
  fields = [k for k in record if recorded.get(k) != record[k]]
  raise ValueError(
      f'{record["dataset"]} is not what this run trained on: its '
      f'{", ".join(fields)} differ from the recorded dataset.json; restore '
      'the files, or train on them in a new --workdir.')


# ----------------------------------------------------------------------------
# Images of one size.
# ----------------------------------------------------------------------------


def _fitted(name, images, fitting, where, paths=None):
  """A list of HWC uint8 images -> one NHWC array, fitted as asked
  (`paths`: the images' files, to name one that does not fit)."""
  if fitting is not None:
    images = [_fit(name, image, fitting,
                   paths[i] if paths else f'{where} image {i}')
              for i, image in enumerate(images)]
  shapes = sorted({image.shape for image in images})
  if len(shapes) > 1:
    raise ValueError(
        f'{name}: {where} images have {len(shapes)} shapes ('
        f'{", ".join(map(str, shapes[:3]))}); set '
        '--config.image_fit=resize:HxW or crop:HxW to bring them to one '
        'size.')
  return np.stack(images)


def _fit(name, image, fitting, what):
  """One HWC uint8 image resized (bilinear) or centre-cropped to (h, w)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  how, (h, w) = fitting
  if how == 'resize':
    if image.shape[:2] == (h, w):
      return image
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((w, h), Image.BILINEAR))
    return out.reshape(h, w, channels)
  height, width = image.shape[:2]
  if height < h or width < w:
    raise ValueError(
        f'{name}: {what} is {height}x{width}, smaller than the crop {h}x{w}; '
        f'use --config.image_fit=resize:{h}x{w} or a smaller crop.')
  top, left = (height - h) // 2, (width - w) // 2
  return image[top:top + h, left:left + w]


def _as_hwc(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  return image[..., None] if image.ndim == 2 else image


def _same_channels(images):
  """Greyscale images made RGB where some images are RGB."""
  if len({image.shape[-1] for image in images}) > 1:
    images = [np.repeat(i, 3, axis=-1) if i.shape[-1] == 1 else i
              for i in images]
  return images


def _check_labels(name, loaded_labels, num_classes, split):
  labels = np.asarray(loaded_labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{name}: {split} labels must be a vector of integers, '
                     f'got {labels.dtype}{labels.shape}.')
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if len(bad):
    raise ValueError(
        f'{name}: {split} label {int(bad[0])} is out of range: labels must '
        f'be in [0, {num_classes}) for its {num_classes} classes.')
  return labels.astype(np.int32)


# ----------------------------------------------------------------------------
# The three kinds.
# ----------------------------------------------------------------------------


def _folder(name, root, fitting) -> Loaded:
  """DIR/{train,test}/<class>/<image files>."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(root):
    raise ValueError(f'{name}: no folder {root}; give a folder holding '
                     'train/<class>/ and test/<class>/ image folders.')
  splits = {}
  for split in _SPLITS:
    folder = os.path.join(root, split)
    classes = (sorted(d for d in os.listdir(folder)
                      if os.path.isdir(os.path.join(folder, d)))
               if os.path.isdir(folder) else [])
    files = [(c, os.path.join(folder, c, f)) for c in classes
             for f in sorted(os.listdir(os.path.join(folder, c)))
             if not f.startswith('.')]
    if not files:
      raise ValueError(
          f'{name}: {folder} holds no images; put one folder per class '
          f'there ({split}/<class>/<image files>).')
    splits[split] = (classes, files)
  class_names = tuple(splits['train'][0])
  index = {c: i for i, c in enumerate(class_names)}
  out = {}
  for split, (classes, files) in splits.items():
    unknown = [c for c in classes if c not in index]
    if unknown:
      raise ValueError(
          f'{name}: {split} class folder {unknown[0]!r} is out of range: it '
          f'is not among the {len(class_names)} training classes.')
    images = []
    for _, path in files:
      try:
        with Image.open(path) as image:
          image = image.convert('L' if image.mode in ('1', 'L', 'I;16')
                                else 'RGB')
          images.append(_as_hwc(np.asarray(image, np.uint8)))
      except OSError as e:
        raise ValueError(f'{name}: {path} is not an image PIL can read '
                         f'({e}); remove it from the folder.') from e
    labels = np.array([index[c] for c, _ in files], np.int32)
    out[split] = (_fitted(name, _same_channels(images), fitting, split,
                          [path for _, path in files]), labels)
  return Loaded(out['train'], out['test'], len(class_names), class_names)


def _npz(name, path, fitting) -> Loaded:
  """FILE.npz with x_train, y_train, x_test, y_test [, num_classes]."""
  if not os.path.isfile(path):
    raise ValueError(f'{name}: no file {path}; give a .npz holding '
                     f'{", ".join(_NPZ_KEYS)}.')
  with np.load(path, allow_pickle=False) as arrays:
    missing = [k for k in _NPZ_KEYS if k not in arrays]
    if missing:
      raise ValueError(f'{name}: {path} lacks {", ".join(missing)}; it needs '
                       f'{", ".join(_NPZ_KEYS)} (images and labels).')
    data = {k: arrays[k] for k in _NPZ_KEYS}
    given = int(arrays['num_classes']) if 'num_classes' in arrays else None
  num_classes = given or int(np.max(data['y_train'], initial=-1)) + 1
  out = {}
  for split in _SPLITS:
    images = np.asarray(data[f'x_{split}'])
    if images.ndim not in (3, 4) or images.dtype != np.uint8:
      raise ValueError(
          f'{name}: x_{split} must be uint8 images [N, H, W] or [N, H, W, C], '
          f'got {images.dtype}{images.shape}; convert them to 0..255 pixels.')
    if not len(images):
      raise ValueError(f'{name}: x_{split} holds no images.')
    labels = _check_labels(name, data[f'y_{split}'], num_classes, split)
    if len(labels) != len(images):
      raise ValueError(f'{name}: {len(images)} x_{split} images but '
                       f'{len(labels)} y_{split} labels.')
    images = [_as_hwc(image) for image in images]
    out[split] = (_fitted(name, images, fitting, split), labels)
  return Loaded(out['train'], out['test'], num_classes,
                tuple(str(c) for c in range(num_classes)))


def _tfds(name, tfds_name, fitting, data_dir, download) -> Loaded:
  """A tfds set prepared elsewhere, through `tfds.data_source`."""
  from adain_kd_jax.data import sources  # pylint: disable=g-import-not-at-top
  raw, label = {}, None
  for split in _SPLITS:
    source = sources.open_tfds(tfds_name, split, data_dir=data_dir,
                               download=download)
    examples = [source[i] for i in range(len(source))]
    if not examples:
      raise ValueError(f'{name}: its {split} split holds no examples.')
    raw[split] = ([_as_hwc(e['image']) for e in examples],
                  np.array([e['label'] for e in examples]))
    label = source.dataset_info.features['label']
  out = {split: (_fitted(name, images, fitting, split),
                 _check_labels(name, labels, label.num_classes, split))
         for split, (images, labels) in raw.items()}
  return Loaded(out['train'], out['test'], label.num_classes,
                tuple(label.names))
