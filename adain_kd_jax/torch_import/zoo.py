"""Imports PyTorch checkpoints of the model zoo as exported Flax teachers.

The CIFAR-100 knowledge distillation benchmark (RepDistiller, Tian et al.,
ICLR 2020) publishes its teachers as PyTorch state dicts; `models` has every
one of its networks layer for layer, and torchvision's ImageNet ResNets. The
importer maps such a state dict onto our variables, strictly (every tensor
used, every variable filled, every shape checked), and writes it as a teacher
export that distillation configs can point at:

  pip install -r requirements-torch.txt
  python -m adain_kd_jax.torch_import.zoo --arch=resnet32x4 \\
      --checkpoint=save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \\
      --out=teachers/cifar100_resnet32x4 --test_accuracy=0.7942

The work is shared by three modules: `key_maps` (PyTorch state-dict keys
<-> our variable paths, per model family), `convert` (a state dict -> our
variables, strictly; numpy only, no torch) and this one (reading `.pth`
files, which needs torch, and the command line).
"""

import argparse
import hashlib
import os
import pickle
import re
from typing import Any, Sequence

from absl import app
from absl import flags
import numpy as np

from adain_kd_jax.data import registry
from adain_kd_jax.torch_import import convert
from adain_kd_jax.torch_import import key_maps
from adain_kd_jax.training import checkpoints


# ----------------------------------------------------------------------------
# Reading .pth files (needs torch).
# ----------------------------------------------------------------------------


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Reading PyTorch checkpoints needs torch, an optional dependency: '
        'pip install -r requirements-torch.txt (in a clone) or pip install '
        '"adain_kd_jax[torch]"') from e
  return torch


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint file as {key: numpy array}.

  Uses `torch.load(weights_only=True)`: tensors, containers and plain values
  only, so a file that pickles code (a whole `nn.Module`, custom classes) is
  refused. RepDistiller's `*_last.pth` also stores its argparse options; that
  one class (`argparse.Namespace`, attributes only) is allowed.

  Args:
    path: a file written by `torch.save`, holding a state dict or a dict that
      wraps one (see `convert.unwrap_state_dict`).

  Returns:
    The state dict, without 'module.' prefixes, as float32-or-native numpy
    arrays (bfloat16 and float16 tensors come back as float32).

  Raises:
    ImportError: torch is not installed.
    ValueError: the file pickles objects other than tensors and plain data,
      or its state dict holds something that is not a tensor.
  """
  torch = _import_torch()
  try:
    with torch.serialization.safe_globals([argparse.Namespace]):
      obj = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    culprit = re.search(r'Unsupported global: GLOBAL (\S+)', str(e))
    raise ValueError(
        f'Refusing to load {path!r}: it pickles Python objects, not just '
        f'tensors ({"e.g. " + culprit[1] if culprit else str(e)[:200]}), and '
        'unpickling them could run code. If you trust the file, re-save its '
        "weights with torch.save(model.state_dict(), path) (or "
        "{'model': model.state_dict()}) and import that.") from e
  except (EOFError, RuntimeError) as e:
    raise ValueError(f'Cannot read {path!r} as a PyTorch checkpoint '
                     f'({type(e).__name__}: {str(e)[:200] or "truncated"}); '
                     'download it again.') from e
  state_dict = convert.unwrap_state_dict(obj)
  bad = [f'{k} ({type(v).__name__})' for k, v in state_dict.items()
         if not isinstance(v, torch.Tensor)]
  if bad:
    raise ValueError(
        f'{path!r} is not a state dict of tensors: {len(bad)} entr(y/ies) '
        f'are not tensors [{convert.brief_list(bad)}].')
  out = {}
  for k, v in state_dict.items():
    v = v.detach().cpu()
    if v.is_floating_point() and v.dtype not in (torch.float32, torch.float64):
      v = v.float()
    out[k] = v.numpy()
  return out


# ----------------------------------------------------------------------------
# Command line: import a .pth file as an exported teacher.
# ----------------------------------------------------------------------------


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def import_checkpoint(arch: str, checkpoint: str, out: str, *,
                      dataset: str = 'cifar100',
                      image_shape: Sequence[int] | None = None,
                      test_accuracy: float | None = None,
                      source: str | None = None) -> dict[str, Any]:
  """Converts a PyTorch checkpoint file and exports it as a teacher.

  Args:
    arch: a `key_maps.TORCH_MODELS` entry.
    checkpoint: the .pth file.
    out: the export directory to create (must not hold anything yet).
    dataset: the data set the teacher was trained on; a `registry.DATASETS`
      name is checked against the class count and input channels.
    image_shape: (H, W, C); defaults to the data set's.
    test_accuracy: the teacher's test accuracy as a fraction in [0, 1].
    source: where the file came from, as recorded (default: its path).

  Returns:
    The meta written to `out/teacher.json` (without step and checksums).
  """
  if test_accuracy is not None and not 0 <= test_accuracy <= 1:
    raise ValueError(
        f'test_accuracy is a fraction in [0, 1], got {test_accuracy} (divide '
        'a percentage, as RepDistiller prints, by 100).')
  if os.path.exists(out) and os.listdir(out):
    raise ValueError(f'{out!r} exists and is not empty; choose a new '
                     'directory for the export.')
  info = registry.DATASETS.get(dataset)
  if image_shape is None:
    if info is None:
      raise ValueError(f'Data set {dataset!r} is not one of '
                       f'{sorted(registry.DATASETS)}; give its image_shape.')
    image_shape = info.image_shape
  image_shape = tuple(int(d) for d in image_shape)
  if len(image_shape) != 3:
    raise ValueError(f'image_shape must be H,W,C, got {image_shape}.')

  variables = convert.convert(arch, load_state_dict(checkpoint))
  num_classes = int(variables['params']['fc']['bias'].shape[0])
  stem = key_maps.stem_conv(arch)
  in_channels = int(variables['params'][stem]['kernel'].shape[2])
  if info is not None and num_classes != info.num_classes:
    raise ValueError(
        f'{checkpoint!r} has {num_classes} classes but {dataset} has '
        f'{info.num_classes}; pass the data set it was trained on.')
  if image_shape[2] != in_channels:
    raise ValueError(f'{checkpoint!r} takes {in_channels}-channel input but '
                     f'image_shape is {image_shape}.')
  meta = {
      'model': arch,
      'num_classes': num_classes,
      'dataset': dataset,
      'image_shape': list(image_shape),
      'test_accuracy': test_accuracy,
      'imported_from': 'pytorch',
      'source': source or os.path.abspath(checkpoint),
      'source_sha256': _file_sha256(checkpoint),
  }
  checkpoints.save_teacher(out, variables, meta, step=0)
  return meta


_ARCHIVE = flags.DEFINE_string(
    'archive', None, "mdistiller's cifar_teachers.tar as downloaded: import "
    'every teacher it holds into --out_dir (instead of --arch, --checkpoint '
    'and --out).')
_OUT_DIR = flags.DEFINE_string(
    'out_dir', 'teachers/cifar100', 'With --archive: each teacher goes to '
    'OUT_DIR/<arch>.')
_ARCH = flags.DEFINE_enum('arch', None, key_maps.TORCH_MODELS,
                          'Architecture of the checkpoint (registry name).')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'PyTorch checkpoint (.pth) holding a state dict, or '
    "{'model': state_dict} as RepDistiller saves.")
_OUT = flags.DEFINE_string(
    'out', None, 'Export directory to create; point '
    'config.teacher_checkpoint at it.')
_DATASET = flags.DEFINE_string(
    'dataset', 'cifar100', 'Data set the teacher was trained on.')
_IMAGE_SHAPE = flags.DEFINE_list(
    'image_shape', None, "H,W,C of the input (default: the data set's).")
_TEST_ACCURACY = flags.DEFINE_float(
    'test_accuracy', None, 'Test accuracy as a fraction in [0, 1] (recorded '
    'in teacher.json).')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  from adain_kd_jax import cli  # pylint: disable=g-import-not-at-top
  if _ARCHIVE.value:
    _import_archive(cli)
    return
  for holder in (_ARCH, _CHECKPOINT, _OUT):
    if holder.value is None:
      raise app.UsageError(f'--{holder.name} is required (or --archive).')
  try:
    with cli.user_errors():  # Bad files and flags: one line, exit status 2.
      meta = import_checkpoint(
          _ARCH.value, _CHECKPOINT.value, _OUT.value, dataset=_DATASET.value,
          image_shape=_IMAGE_SHAPE.value, test_accuracy=_TEST_ACCURACY.value)
  except ImportError as e:  # torch is missing: the install line.
    raise app.UsageError(str(e)) from e
  print(f'Imported {meta["model"]} ({meta["num_classes"]} classes, '
        f'{meta["dataset"]}) from {meta["source"]}; wrote the teacher export '
        f'to {os.path.abspath(_OUT.value)}', flush=True)


def _import_archive(cli) -> None:
  """--archive: every teacher of the archive, one line each."""
  from adain_kd_jax.torch_import import archive  # pylint: disable=g-import-not-at-top
  try:
    with cli.user_errors():
      status = archive.import_archive(
          cli.resolve_path(_ARCHIVE.value), _OUT_DIR.value, import_checkpoint,
          dataset=_DATASET.value, log=lambda line: print(line, flush=True))
  except ImportError as e:
    raise app.UsageError(str(e)) from e
  missing = sorted(set(archive.PUBLISHED_TEST_ACCURACY) - set(status))
  print(f'{len(status)} teachers in {os.path.abspath(_OUT_DIR.value)}'
        + (f'; not in the archive: {", ".join(missing)}' if missing else '')
        + '.', flush=True)


def run():
  """The console script `adain-kd-import`."""
  from adain_kd_jax import cli
  cli.run(main)


if __name__ == '__main__':
  run()
