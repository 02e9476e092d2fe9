"""PyTorch state-dict keys <-> our variable paths, per model family.

The layouts of RepDistiller's CIFAR-100 zoo (Tian et al., ICLR 2020) and
torchvision's ImageNet ResNets, as the model docstrings give them (PyTorch
module -> Flax module): RepDistiller's `layer{s}.{b}` (ResNets, ShuffleNets)
and `block{s}.layer.{b}` (WRNs) are our `stage{s}_block{b}`; VGG's
`block{s}.{3j}` / `{3j+1}` are `stem_conv{j}` / `stage{s}_bn{j}` and so on;
MobileNetV2's groups of inverted residuals are renumbered into our four
stages. Tensors: conv weights OIHW -> HWIO (grouped and depthwise ones too:
PyTorch's (O, I/g, kH, kW) is Flax's (kH, kW, I/g, O)), linear (out, in) ->
(in, out), BatchNorm weight, bias, running_mean, running_var -> scale, bias,
mean, var; `num_batches_tracked` has no counterpart.

A registry model has PyTorch weights to import when the maps know its
family (`models.ModelInfo.family`): `TORCH_MODELS`, a subset of
`models.MODEL_NAMES`.

Names and shapes only: `torch_convert` moves the values.
"""

import re
from typing import Sequence

from adain_kd_jax import models

# Top-level modules (outside the stages), per family.
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
# The registry's models whose family has a PyTorch layout here.
TORCH_MODELS = tuple(name for name in models.MODEL_NAMES
                     if models.MODELS[name].family in _TOP)
# A block's shortcut modules.
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


def family_of(arch: str) -> str:
  """The naming family of a registry name, e.g. 'wrn' for 'wrn_40_2'.

  Raises:
    ValueError: `arch` is not a `models.MODEL_NAMES` entry, or its family has
      no PyTorch layout here (it is not in `TORCH_MODELS`).
  """
  family = models.get_info(arch).family
  if family not in _TOP:
    raise ValueError(
        f'Model {arch!r} (family {family!r}) has no PyTorch layout to import. '
        f'Models with one: {", ".join(TORCH_MODELS)}')
  return family


def stem_conv(arch: str) -> str:
  """Our name of the first conv of `arch` (its kernel gives the channels)."""
  return 'stem_conv0' if family_of(arch) == 'vgg' else 'stem_conv'


def _flax_vgg_module(module: str) -> tuple[str, ...] | None:
  """`block{s}.{3j}` -> `stage{s}_conv{j}` (`stem_` for s = 0), 3j+1 -> bn."""
  m = re.fullmatch(r'block(\d)\.(\d+)', module)
  if not m or int(m[2]) % 3 == 2:  # Index 3j+2 is a ReLU.
    return None
  s, k = int(m[1]), int(m[2])
  kind = 'conv' if k % 3 == 0 else 'bn'
  return (f"{'stem' if s == 0 else f'stage{s}'}_{kind}{k // 3}",)


def _flax_mobilenet_module(module: str) -> tuple[str, ...] | None:
  """`blocks.{g}.{j}.conv.{i}` -> (`stage{s}_block{b}`, layer)."""
  m = re.fullmatch(r'blocks\.(\d)\.(\d+)\.conv\.(\d)', module)
  if (not m or (int(m[1]), int(m[2])) not in _MOBILENET_BLOCKS
      or int(m[3]) not in _MOBILENET_LAYERS):
    return None
  s, b = _MOBILENET_BLOCKS[int(m[1]), int(m[2])]
  return (f'stage{s}_block{b}', _MOBILENET_LAYERS[int(m[3])])


def _flax_module(family: str, module: str) -> tuple[str, ...] | None:
  """Flax module path of a PyTorch module path; None if there is none."""
  top = _TOP[family]
  if module in top:
    return (top[module],)
  if family == 'vgg':
    return _flax_vgg_module(module)
  if family == 'mobilenetv2':
    return _flax_mobilenet_module(module)
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
    arch: a `TORCH_MODELS` entry.
    key: a state-dict key without any 'module.' prefix, e.g.
      'layer1.0.conv1.weight'.
    shape: the tensor's PyTorch shape.

  Returns:
    e.g. ('params', ('stage1_block0', 'conv1', 'kernel'), (3, 3, 16, 16)),
    with shapes transposed (conv OIHW -> HWIO, linear (out, in) -> (in, out));
    None for a key that has no counterpart (including num_batches_tracked).
  """
  family = family_of(arch)
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
  return (f'{_torch_module(family_of(arch), path[:-1])}.'
          f'{_LEAVES[collection, path[-1]]}')


def to_torch_shape(flax_shape: Sequence[int]) -> tuple[int, ...]:
  """Inverse of the transposes: HWIO -> OIHW, (in, out) -> (out, in)."""
  s = tuple(flax_shape)
  if len(s) == 4:
    return (s[3], s[2], s[0], s[1])
  if len(s) == 2:
    return (s[1], s[0])
  return s
