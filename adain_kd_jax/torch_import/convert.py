"""A PyTorch state dict -> our Flax variables, strictly; needs no torch.

Every tensor is used, every variable filled and every shape checked against
`models.create_model(arch, num_classes)`'s variables; the names come from
`key_maps.py`. Values are numpy arrays (or anything `np.asarray` takes):
`zoo.load_state_dict` reads them from `.pth` files.
"""

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from adain_kd_jax import models
from adain_kd_jax.torch_import import key_maps
# Keys under which training scripts wrap the state dict (RepDistiller saves
# {'epoch', 'model', 'best_acc' or 'accuracy', 'optimizer'}).
_WRAPPER_KEYS = ('state_dict', 'model')
_DATA_PARALLEL_PREFIX = 'module.'
# How many keys an error message lists.
_SHOW = 5

# (collection, Flax path) of a variable.
_Target = tuple[str, tuple[str, ...]]


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


def brief_list(items: Sequence[str]) -> str:
  """The first few items, comma-separated, and how many more (for errors)."""
  shown = ', '.join(items[:_SHOW])
  return shown + (f', ... ({len(items) - _SHOW} more)'
                  if len(items) > _SHOW else '')


def _to_flax_array(value: np.ndarray, dtype: Any) -> np.ndarray:
  """OIHW -> HWIO, (out, in) -> (in, out); a contiguous array of `dtype`."""
  value = np.asarray(value)
  if value.ndim == 4:
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 2:
    value = value.T
  return np.ascontiguousarray(value, dtype=dtype)


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


def _model_sizes(arch: str,
                 state_dict: Mapping[str, Any]) -> tuple[int, int]:
  """(classes, input channels): the classifier's outputs, first conv's inputs.

  Defaults (for a state dict that lacks those tensors, which `convert` then
  reports as missing): 1 class, 3 channels.
  """
  fc_key = key_maps.flax_to_torch_key(arch, 'params', ('fc', 'kernel'))
  num_classes = _first_dim(state_dict, fc_key, 0, None) or _first_dim(
      state_dict, fc_key.replace('weight', 'bias'), 0, 1)
  stem_key = key_maps.flax_to_torch_key(
      arch, 'params', (key_maps.stem_conv(arch), 'kernel'))
  in_channels = _first_dim(state_dict, stem_key, 1, 3)
  return num_classes, in_channels


def _match(arch: str, state_dict: Mapping[str, Any],
           expected: Mapping[_Target, Any]
           ) -> tuple[dict[_Target, tuple[str, Any, tuple[int, ...]]],
                      list[str]]:
  """Pairs state-dict entries with the variables they fill.

  Returns:
    (found, unexpected): found maps a target to (key, value, Flax shape of
    the value); unexpected lists 'key (shape)' of the entries without a
    target or with one already filled (num_batches_tracked is skipped).
  """
  found, unexpected = {}, []
  for key, value in state_dict.items():
    if not isinstance(key, str):
      unexpected.append(repr(key))
      continue
    if key.endswith('num_batches_tracked'):
      continue
    leaf = key_maps.torch_key_to_flax(arch, key, np.shape(value))
    target = leaf and leaf[:2]
    if target not in expected or target in found:
      unexpected.append(f'{key} {tuple(np.shape(value))}')
      continue
    found[target] = (key, value, leaf[2])
  return found, unexpected


def _check_keys(arch: str, where: str, expected: Mapping[_Target, Any],
                found: Mapping[_Target, Any], unexpected: Sequence[str]
                ) -> None:
  """ValueError naming the missing and unexpected keys, if there are any."""
  # Parameters first: a missing module shows as its weight, not its stats.
  missing = [f'{key_maps.flax_to_torch_key(arch, *target)} '
             f'{key_maps.to_torch_shape(expected[target].shape)}'
             for target in sorted(expected, key=lambda t: t[0] != 'params')
             if target not in found]
  if missing or unexpected:
    raise ValueError(
        f'The state dict does not match {where}: {len(missing)} key(s) '
        f'missing [{brief_list(missing)}], {len(unexpected)} unexpected '
        f'[{brief_list(unexpected)}]. Is it of another architecture (the '
        "names follow RepDistiller's zoo and torchvision)?")


def _check_shapes(where: str, expected: Mapping[_Target, Any],
                  found: Mapping[_Target, Any]) -> None:
  """ValueError naming the entries whose shapes differ, if there are any."""
  wrong = [f'{key} has shape {tuple(np.shape(value))}, expected '
           f'{key_maps.to_torch_shape(expected[target].shape)}'
           for target, (key, value, flax_shape) in found.items()
           if flax_shape != tuple(expected[target].shape)]
  if wrong:
    raise ValueError(f'The state dict does not match {where}: '
                     f'{len(wrong)} shape(s) differ [{brief_list(wrong)}].')


def convert(arch: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Converts a PyTorch state dict of `arch` to our variables.

  Args:
    arch: a `key_maps.TORCH_MODELS` entry, e.g. 'wrn_40_2' or 'resnet18'.
    state_dict: PyTorch key -> array (numpy, or anything `np.asarray` takes),
      as `load_state_dict` returns; may be wrapped and prefixed as
      `unwrap_state_dict` accepts.

  Returns:
    {'params': ..., 'batch_stats': ...}: nested dicts of float32 numpy arrays,
    the same tree and shapes as `models.create_model(arch, num_classes)`'s
    variables, with num_classes the classifier's output size (and the input
    channels the first conv's).

  Raises:
    ValueError: unknown arch, or one without a PyTorch layout; a tensor
      without a counterpart; a variable left unfilled; a shape that does not
      match. The message names the arch and the first few offending keys.
  """
  key_maps.family_of(arch)  # An unknown arch is the first error.
  state_dict = unwrap_state_dict(state_dict)
  num_classes, in_channels = _model_sizes(arch, state_dict)
  abstract = _abstract_variables(arch, num_classes, in_channels)
  expected = {(collection, tuple(k.key for k in path)): leaf
              for collection, tree in abstract.items()
              for path, leaf in jax.tree.leaves_with_path(tree)}
  found, unexpected = _match(arch, state_dict, expected)
  where = f'a {arch} with {num_classes} classes'
  _check_keys(arch, where, expected, found, unexpected)
  _check_shapes(where, expected, found)

  def fill(path, leaf):
    target = (path[0].key, tuple(k.key for k in path[1:]))
    return _to_flax_array(found[target][1], leaf.dtype)

  return jax.tree.map_with_path(fill, abstract)
