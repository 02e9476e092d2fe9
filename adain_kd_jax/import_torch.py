"""Imports PyTorch checkpoints of the model zoo as exported Flax teachers.

The CIFAR-100 knowledge distillation benchmark (RepDistiller, Tian et al.,
ICLR 2020) publishes its teachers as PyTorch state dicts; `models` has every
one of its networks layer for layer, and torchvision's ImageNet ResNets. This
module maps such a state dict onto our variables, strictly (every tensor used,
every variable filled, every shape checked), and writes it as a teacher export
that distillation configs can point at:

  pip install -r requirements-torch.txt
  python -m adain_kd_jax.import_torch --arch=resnet32x4 \\
      --checkpoint=save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \\
      --out=teachers/cifar100_resnet32x4 --test_accuracy=0.7942

Names follow the model docstrings (PyTorch module -> Flax module):
RepDistiller's `layer{s}.{b}` (ResNets, ShuffleNets) and `block{s}.layer.{b}`
(WRNs) are our `stage{s}_block{b}`; VGG's `block{s}.{3j}` / `{3j+1}` are
`stem_conv{j}` / `stage{s}_bn{j}` and so on; MobileNetV2's groups of inverted
residuals are renumbered into our four stages. Tensors: conv weights OIHW ->
HWIO (grouped and depthwise ones too: PyTorch's (O, I/g, kH, kW) is Flax's
(kH, kW, I/g, O)), linear (out, in) -> (in, out), BatchNorm weight, bias,
running_mean, running_var -> scale, bias, mean, var; `num_batches_tracked` is
dropped.

torch is needed only to read `.pth` files (`load_state_dict`); `convert` works
on numpy arrays and needs no torch.
"""

import argparse
import functools
import hashlib
import os
import pickle
import re
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from adain_kd_jax import checkpoints
from adain_kd_jax.data import registry
from adain_kd_jax import models

IMAGENET_MODELS = ('resnet18', 'resnet34', 'resnet50')

# Keys under which training scripts wrap the state dict (RepDistiller saves
# {'epoch', 'model', 'best_acc' or 'accuracy', 'optimizer'}).
_WRAPPER_KEYS = ('state_dict', 'model')
_DATA_PARALLEL_PREFIX = 'module.'
# How many keys an error message lists.
_SHOW = 5

# ----------------------------------------------------------------------------
# Names: PyTorch module path <-> Flax module path, per family.
# ----------------------------------------------------------------------------

# Top-level modules (outside the stages) and a block's shortcut modules.
_TOP = {
    'cifar_resnet': {'conv1': 'stem_conv', 'bn1': 'stem_bn', 'fc': 'fc'},
    'imagenet_resnet': {'conv1': 'stem_conv', 'bn1': 'stem_bn', 'fc': 'fc'},
    'resnetv2': {'conv1': 'stem_conv', 'bn1': 'stem_bn', 'linear': 'fc'},
    'shufflev1': {'conv1': 'stem_conv', 'bn1': 'stem_bn', 'linear': 'fc'},
    'shufflev2': {'conv1': 'stem_conv', 'bn1': 'stem_bn', 'conv2': 'head_conv',
                  'bn2': 'head_bn', 'linear': 'fc'},
    # Pre-activation: the top-level bn1 is the final BN before pooling.
    'wrn': {'conv1': 'stem_conv', 'bn1': 'head_bn', 'fc': 'fc'},
    'mobilenetv2': {'conv1.0': 'stem_conv', 'conv1.1': 'stem_bn',
                    'conv2.0': 'head_conv', 'conv2.1': 'head_bn',
                    'classifier.0': 'fc'},
    'vgg': {'classifier': 'fc'},
}
_DOWNSAMPLE = {'downsample.0': 'shortcut_conv', 'downsample.1': 'shortcut_bn'}
_SHORTCUTS = {
    'cifar_resnet': _DOWNSAMPLE,
    'imagenet_resnet': _DOWNSAMPLE,
    'resnetv2': {'shortcut.0': 'shortcut_conv', 'shortcut.1': 'shortcut_bn'},
    'wrn': {'convShortcut': 'shortcut_conv'},
}
# Where a stage's blocks live in the PyTorch module tree.
_BLOCK_PATTERNS = {'wrn': (r'block(\d)\.layer\.(\d+)', 'block{}.layer.{}')}
_DEFAULT_BLOCK_PATTERN = (r'layer(\d)\.(\d+)', 'layer{}.{}')


def _mobilenet_blocks() -> dict[tuple[int, int], tuple[int, int]]:
  """(PyTorch group, index in group) -> (stage, block) of MobileNetV2."""
  group_sizes = (1, 2, 3, 4, 3, 3, 1)
  stage_groups = ((0, 1), (2,), (3, 4), (5, 6))
  table = {}
  for s, groups in enumerate(stage_groups, 1):
    b = 0
    for g in groups:
      for j in range(group_sizes[g]):
        table[g, j] = (s, b)
        b += 1
  return table


_MOBILENET_BLOCKS = _mobilenet_blocks()
_MOBILENET_BLOCKS_INV = {v: k for k, v in _MOBILENET_BLOCKS.items()}
# Index in an inverted residual's `conv` Sequential -> our layer name.
_MOBILENET_LAYERS = {0: 'conv1', 1: 'bn1', 3: 'conv2', 4: 'bn2', 6: 'conv3',
                     7: 'bn3'}
_MOBILENET_LAYERS_INV = {v: k for k, v in _MOBILENET_LAYERS.items()}

_LEAVES = {  # (collection, Flax leaf) -> PyTorch tensor name.
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}


def _family(arch: str) -> str:
  """The naming family of a registry name; ValueError for unknown names."""
  if arch not in models.MODEL_NAMES:
    raise ValueError(f'Unknown model {arch!r}. Valid names: '
                     f'{", ".join(models.MODEL_NAMES)}')
  if arch in IMAGENET_MODELS:
    return 'imagenet_resnet'
  if arch == 'ResNet50':
    return 'resnetv2'
  if arch.startswith('resnet'):
    return 'cifar_resnet'
  if arch.startswith('wrn'):
    return 'wrn'
  if arch.startswith('vgg'):
    return 'vgg'
  return {'MobileNetV2': 'mobilenetv2', 'ShuffleV1': 'shufflev1',
          'ShuffleV2': 'shufflev2'}[arch]


def _flax_module(family: str, module: str) -> tuple[str, ...] | None:
  """Flax module path of a PyTorch module path; None if there is none."""
  top = _TOP[family]
  if module in top:
    return (top[module],)
  if family == 'vgg':
    m = re.fullmatch(r'block(\d)\.(\d+)', module)
    if not m or int(m[2]) % 3 == 2:  # Index 3j+2 is a ReLU.
      return None
    s, k = int(m[1]), int(m[2])
    kind = 'conv' if k % 3 == 0 else 'bn'
    return (f"{'stem' if s == 0 else f'stage{s}'}_{kind}{k // 3}",)
  if family == 'mobilenetv2':
    m = re.fullmatch(r'blocks\.(\d)\.(\d+)\.conv\.(\d)', module)
    if (not m or (int(m[1]), int(m[2])) not in _MOBILENET_BLOCKS
        or int(m[3]) not in _MOBILENET_LAYERS):
      return None
    s, b = _MOBILENET_BLOCKS[int(m[1]), int(m[2])]
    return (f'stage{s}_block{b}', _MOBILENET_LAYERS[int(m[3])])
  pattern, _ = _BLOCK_PATTERNS.get(family, _DEFAULT_BLOCK_PATTERN)
  m = re.fullmatch(pattern + r'\.(.+)', module)
  if not m:
    return None
  layer = m[3]
  layer = _SHORTCUTS.get(family, {}).get(layer, layer)
  if not re.fullmatch(r'(conv|bn)\d|shortcut_(conv|bn)', layer):
    return None
  return (f'stage{m[1]}_block{m[2]}', layer)


def _torch_module(family: str, path: Sequence[str]) -> str:
  """PyTorch module path of a Flax module path (inverse of `_flax_module`)."""
  if len(path) == 1:
    top = {v: k for k, v in _TOP[family].items()}
    if path[0] in top:
      return top[path[0]]
    if family == 'vgg':
      m = re.fullmatch(r'(?:stem|stage(\d))_(conv|bn)(\d+)', path[0])
      s, j = int(m[1] or 0), int(m[3])
      return f'block{s}.{3 * j + (m[2] == "bn")}'
  s, b = map(int, re.fullmatch(r'stage(\d)_block(\d+)', path[0]).groups())
  layer = path[1]
  if family == 'mobilenetv2':
    g, j = _MOBILENET_BLOCKS_INV[s, b]
    return f'blocks.{g}.{j}.conv.{_MOBILENET_LAYERS_INV[layer]}'
  shortcuts = {v: k for k, v in _SHORTCUTS.get(family, {}).items()}
  _, template = _BLOCK_PATTERNS.get(family, _DEFAULT_BLOCK_PATTERN)
  return f'{template.format(s, b)}.{shortcuts.get(layer, layer)}'


def torch_key_to_flax(
    arch: str, key: str, shape: Sequence[int]
) -> tuple[str, tuple[str, ...], tuple[int, ...]] | None:
  """(collection, Flax path, Flax shape) of one PyTorch state-dict entry.

  Args:
    arch: a `models.MODEL_NAMES` entry.
    key: a state-dict key without any 'module.' prefix, e.g.
      'layer1.0.conv1.weight'.
    shape: the tensor's PyTorch shape.

  Returns:
    e.g. ('params', ('stage1_block0', 'conv1', 'kernel'), (3, 3, 16, 16)),
    with shapes transposed (conv OIHW -> HWIO, linear (out, in) -> (in, out));
    None for a key that has no counterpart (including num_batches_tracked).
  """
  family = _family(arch)
  if '.' not in key:
    return None
  module, tensor = key.rsplit('.', 1)
  path = _flax_module(family, module)
  if path is None:
    return None
  shape = tuple(int(d) for d in shape)
  if tensor == 'weight' and len(shape) == 4:
    return 'params', (*path, 'kernel'), (*shape[2:], shape[1], shape[0])
  if tensor == 'weight' and len(shape) == 2:
    return 'params', (*path, 'kernel'), (shape[1], shape[0])
  if tensor == 'weight':
    return 'params', (*path, 'scale'), shape
  if tensor == 'bias':
    return 'params', (*path, 'bias'), shape
  stat = {'running_mean': 'mean', 'running_var': 'var'}.get(tensor)
  if stat is None:
    return None
  return 'batch_stats', (*path, stat), shape


def flax_to_torch_key(arch: str, collection: str,
                      path: Sequence[str]) -> str:
  """The PyTorch state-dict key of one of our variables (for messages).

  E.g. ('batch_stats', ('stage1_block0', 'bn1', 'var')) ->
  'layer1.0.bn1.running_var' for a CIFAR ResNet.
  """
  family = _family(arch)
  return (f'{_torch_module(family, path[:-1])}.'
          f'{_LEAVES[collection, path[-1]]}')


def _to_torch_shape(flax_shape: Sequence[int]) -> tuple[int, ...]:
  """Inverse of the transposes: HWIO -> OIHW, (in, out) -> (out, in)."""
  s = tuple(flax_shape)
  if len(s) == 4:
    return (s[3], s[2], s[0], s[1])
  if len(s) == 2:
    return (s[1], s[0])
  return s


def _to_flax_array(value: np.ndarray, dtype: Any) -> np.ndarray:
  value = np.asarray(value)
  if value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 2:
    value = value.T
  return np.ascontiguousarray(value, dtype=dtype)


# ----------------------------------------------------------------------------
# Conversion.
# ----------------------------------------------------------------------------


def unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
  """The state dict inside a training checkpoint, without 'module.' prefixes.

  Accepts a bare state dict, or a dict that holds one under 'state_dict' or
  'model' (as RepDistiller saves: {'epoch', 'model', 'optimizer', ...}). The
  'module.' prefix of a DataParallel model is removed when every key has it.
  """
  if not isinstance(obj, Mapping):
    raise ValueError(
        f'Expected a state dict (a mapping of names to tensors), got a '
        f'{type(obj).__name__}. Save checkpoints with '
        'torch.save(model.state_dict(), path).')
  for wrapper in _WRAPPER_KEYS:
    if isinstance(obj.get(wrapper), Mapping):
      obj = obj[wrapper]
      break
  keys = list(obj)
  if keys and all(isinstance(k, str) and k.startswith(_DATA_PARALLEL_PREFIX)
                  for k in keys):
    obj = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in obj.items()}
  return obj


@functools.lru_cache(maxsize=8)
def _abstract_variables(arch: str, num_classes: int, in_channels: int):
  """Shapes of `create_model(arch, num_classes)`'s variables (nothing run).

  Variable shapes do not depend on the input's height and width, only on its
  channels; 32x32 is valid for every model.
  """
  model = models.create_model(arch, num_classes)
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, in_channels)), train=False))


def _first_dim(state_dict, key, axis, default):
  value = state_dict.get(key)
  shape = np.shape(value) if value is not None else ()
  return int(shape[axis]) if len(shape) > axis else default


def _list(items: Sequence[str]) -> str:
  shown = ', '.join(items[:_SHOW])
  return shown + (f', ... ({len(items) - _SHOW} more)'
                  if len(items) > _SHOW else '')


def convert(arch: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Converts a PyTorch state dict of `arch` to our variables.

  Args:
    arch: a `models.MODEL_NAMES` entry, e.g. 'wrn_40_2' or 'resnet18'.
    state_dict: PyTorch key -> array (numpy, or anything `np.asarray` takes),
      as `load_state_dict` returns; may be wrapped and prefixed as
      `unwrap_state_dict` accepts.

  Returns:
    {'params': ..., 'batch_stats': ...}: nested dicts of float32 numpy arrays,
    the same tree and shapes as `models.create_model(arch, num_classes)`'s
    variables, with num_classes the classifier's output size (and the input
    channels the first conv's).

  Raises:
    ValueError: unknown arch; a tensor without a counterpart; a variable left
      unfilled; a shape that does not match. The message names the arch and
      the first few offending keys.
  """
  family = _family(arch)
  state_dict = unwrap_state_dict(state_dict)
  fc_key = flax_to_torch_key(arch, 'params', ('fc', 'kernel'))
  num_classes = _first_dim(state_dict, fc_key, 0, None) or _first_dim(
      state_dict, fc_key.replace('weight', 'bias'), 0, 1)
  stem = 'stem_conv0' if family == 'vgg' else 'stem_conv'
  in_channels = _first_dim(
      state_dict, flax_to_torch_key(arch, 'params', (stem, 'kernel')), 1, 3)
  abstract = _abstract_variables(arch, num_classes, in_channels)
  expected = {(collection, tuple(k.key for k in path)): leaf
              for collection, tree in abstract.items()
              for path, leaf in jax.tree.leaves_with_path(tree)}

  found, unexpected = {}, []
  for key, value in state_dict.items():
    if not isinstance(key, str):
      unexpected.append(repr(key))
      continue
    if key.endswith('num_batches_tracked'):
      continue
    leaf = torch_key_to_flax(arch, key, np.shape(value))
    target = leaf and leaf[:2]
    if target not in expected or target in found:
      unexpected.append(f'{key} {tuple(np.shape(value))}')
      continue
    found[target] = (key, value, leaf[2])
  # Parameters first: a missing module shows as its weight, not its stats.
  missing = [f'{flax_to_torch_key(arch, *target)} '
             f'{_to_torch_shape(expected[target].shape)}'
             for target in sorted(expected, key=lambda t: t[0] != 'params')
             if target not in found]
  where = f'a {arch} with {num_classes} classes'
  if missing or unexpected:
    raise ValueError(
        f'The state dict does not match {where}: {len(missing)} key(s) '
        f'missing [{_list(missing)}], {len(unexpected)} unexpected '
        f'[{_list(unexpected)}]. Is it of another architecture (the names '
        "follow RepDistiller's zoo and torchvision)?")
  wrong = [f'{key} has shape {tuple(np.shape(value))}, expected '
           f'{_to_torch_shape(expected[target].shape)}'
           for target, (key, value, flax_shape) in found.items()
           if flax_shape != tuple(expected[target].shape)]
  if wrong:
    raise ValueError(f'The state dict does not match {where}: '
                     f'{len(wrong)} shape(s) differ [{_list(wrong)}].')

  def fill(path, leaf):
    target = (path[0].key, tuple(k.key for k in path[1:]))
    return _to_flax_array(found[target][1], leaf.dtype)

  return jax.tree.map_with_path(fill, abstract)


# ----------------------------------------------------------------------------
# Reading .pth files (needs torch).
# ----------------------------------------------------------------------------


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Reading PyTorch checkpoints needs torch, an optional dependency: '
        'pip install -r requirements-torch.txt') from e
  return torch


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint file as {key: numpy array}.

  Uses `torch.load(weights_only=True)`: tensors, containers and plain values
  only, so a file that pickles code (a whole `nn.Module`, custom classes) is
  refused. RepDistiller's `*_last.pth` also stores its argparse options; that
  one class (`argparse.Namespace`, attributes only) is allowed.

  Args:
    path: a file written by `torch.save`, holding a state dict or a dict that
      wraps one (see `unwrap_state_dict`).

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
  state_dict = unwrap_state_dict(obj)
  bad = [f'{k} ({type(v).__name__})' for k, v in state_dict.items()
         if not isinstance(v, torch.Tensor)]
  if bad:
    raise ValueError(
        f'{path!r} is not a state dict of tensors: {len(bad)} entr(y/ies) '
        f'are not tensors [{_list(bad)}].')
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
                      test_accuracy: float | None = None) -> dict[str, Any]:
  """Converts a PyTorch checkpoint file and exports it as a teacher.

  Args:
    arch: a `models.MODEL_NAMES` entry.
    checkpoint: the .pth file.
    out: the export directory to create (must not hold anything yet).
    dataset: the data set the teacher was trained on; a `registry.DATASETS`
      name is checked against the class count and input channels.
    image_shape: (H, W, C); defaults to the data set's.
    test_accuracy: the teacher's test accuracy as a fraction in [0, 1].

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

  variables = convert(arch, load_state_dict(checkpoint))
  num_classes = int(variables['params']['fc']['bias'].shape[0])
  stem = 'stem_conv0' if _family(arch) == 'vgg' else 'stem_conv'
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
      'source': os.path.abspath(checkpoint),
      'source_sha256': _file_sha256(checkpoint),
  }
  checkpoints.save_teacher(out, variables, meta, step=0)
  return meta


_ARCH = flags.DEFINE_enum('arch', None, models.MODEL_NAMES,
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
  for holder in (_ARCH, _CHECKPOINT, _OUT):
    if holder.value is None:
      raise app.UsageError(f'--{holder.name} is required.')
  meta = import_checkpoint(
      _ARCH.value, _CHECKPOINT.value, _OUT.value, dataset=_DATASET.value,
      image_shape=_IMAGE_SHAPE.value, test_accuracy=_TEST_ACCURACY.value)
  print(f'Imported {meta["model"]} ({meta["num_classes"]} classes, '
        f'{meta["dataset"]}) from {meta["source"]}; wrote the teacher export '
        f'to {os.path.abspath(_OUT.value)}', flush=True)


if __name__ == '__main__':
  app.run(main)
