"""ReviewKD's attention-based fusion (ABF), trained with the student
(params / batch_stats under 'reviewkd').

As mdistiller's `ABF` and `ReviewKD.forward_train`
(`distillers/ReviewKD.py`): the student's features, deepest first (the
pooled vector as a 1x1 map, then the stage outputs), each through a 1x1
conv + BN to the middle width (the pooled vector's channels, at most 512);
below the deepest, fused with the level above it (nearest-resized to this
level's size) by a two-channel sigmoid attention (1x1 conv with bias on
both, concatenated): `x a_0 + y a_1`; the fused map, nearest-resized to the
teacher's size at that level, goes on as the next level's residual and
through a 3x3 conv + BN to the teacher's channels, the level's output.
Convolutions without bias get kaiming_uniform(a=1), U(+-sqrt(3 / fan_in));
the attention conv PyTorch's default. Levels: the pooled vector and the
last n - 1 stages of each network, n - 1 the smaller stage count (mdistiller
sets them per pair in its config; here they follow from the networks). The
`ReviewKD` term declares them with `ReviewKDAdapter`; the outputs are
`Outputs.adapted['reviewkd']`, shallowest level first.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.models import layers

_KAIMING_UNIFORM_A1 = nn.initializers.variance_scaling(1.0, 'fan_in',
                                                       'uniform')
MAX_MID_CHANNELS = 512


def _torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


class ABF(nn.Module):
  """One level: (output to the teacher's shape, residual for the next)."""
  mid_channels: int
  out_channels: int
  out_size: int
  fuse: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y=None, *, train: bool):
    norm = lambda name: layers.batch_norm(
        self.dtype, use_running_average=not train, name=name)
    _, h, w, _ = x.shape
    x = nn.Conv(self.mid_channels, (1, 1), use_bias=False, dtype=self.dtype,
                kernel_init=_KAIMING_UNIFORM_A1, name='conv1')(x)
    x = norm('bn1')(x)
    if self.fuse:
      y = losses.nearest_resize(y, h, w)
      fan_in = 2 * self.mid_channels
      z = nn.sigmoid(nn.Conv(
          2, (1, 1), use_bias=True, dtype=self.dtype,
          kernel_init=layers.torch_default_init,
          bias_init=_torch_bias_init(fan_in), name='att_conv')(
              jnp.concatenate([x, y], axis=-1)))
      x = x * z[..., :1] + y * z[..., 1:]
    if w != self.out_size:
      x = losses.nearest_resize(x, self.out_size, self.out_size)
    out = nn.Conv(self.out_channels, (3, 3), padding=((1, 1), (1, 1)),
                  use_bias=False, dtype=self.dtype,
                  kernel_init=_KAIMING_UNIFORM_A1, name='conv2')(x)
    return norm('bn2')(out), x


class ReviewKDFusion(nn.Module):
  """Every level's ABF, deepest first; returns the outputs shallowest first.

  Attributes:
    out_shapes: ((teacher_channels, teacher_size), ...) per level,
      shallowest first (the last is the pooled vector's, size 1).
    mid_channels: the ABFs' middle width.
  """
  out_shapes: tuple[tuple[int, int], ...]
  mid_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps: tuple[Any, ...], *, train: bool):
    n = len(maps)
    results, residual = [], None
    for i in reversed(range(n)):
      c_t, size = self.out_shapes[i]
      out, residual = ABF(self.mid_channels, c_t, size, fuse=i < n - 1,
                          dtype=self.dtype, name=f'abf{i}')(
                              maps[i], residual, train=train)
      results.insert(0, out)
    return tuple(results)


def levels(feats_s: dict, feats_t: dict) -> tuple[list[str], list[str]]:
  """The student's and the teacher's feature names per level, shallowest
  first: the last n - 1 stage outputs (the teacher's before their ReLU, as
  mdistiller) and 'pre_logits'."""
  s_stages = sorted(int(k[5:]) for k in feats_s
                    if k.startswith('stage'))
  t_stages = sorted(int(k[12:]) for k in feats_t
                    if k.startswith('preact_stage'))
  m = min(len(s_stages), len(t_stages))
  return ([f'stage{k}' for k in s_stages[len(s_stages) - m:]]
          + ['pre_logits'],
          [f'preact_stage{k}' for k in t_stages[len(t_stages) - m:]]
          + ['pre_logits'])


def as_map(f):
  """A pooled vector (N, C) as a 1x1 map; maps unchanged."""
  return f[:, None, None, :] if f.ndim == 2 else f


@dataclasses.dataclass(frozen=True)
class ReviewKDAdapter(base.Adapter):
  """ReviewKD's fusion from the student's levels to the teacher's shapes.

  `build` raises ValueError in one line for a teacher without pre-ReLU maps
  or a level whose maps are not square.
  """
  key = 'reviewkd'
  init_stream = 8

  def build(self, config, shapes):
    if not any(k.startswith('preact_stage') for k in shapes.teacher):
      raise ValueError(
          'ReviewKD distils to the teacher\'s maps before their ReLU, which '
          f'config.teacher={config.teacher!r} does not expose; use another '
          'teacher or method.')
    s_names, t_names = levels(shapes.student, shapes.teacher)
    out_shapes = []
    map_shape = lambda f: f.shape if len(f.shape) == 4 else (
        f.shape[0], 1, 1, f.shape[1])
    for s_name, t_name in zip(s_names, t_names):
      s_shape = map_shape(shapes.student[s_name])
      t_shape = map_shape(shapes.teacher[t_name])
      if s_shape[1] != s_shape[2] or t_shape[1] != t_shape[2]:
        raise ValueError(
            f'ReviewKD resizes square maps only (mdistiller\'s shapes): '
            f'student {s_name} {s_shape[1:3]}, teacher {t_name} '
            f'{t_shape[1:3]}; use square images.')
      out_shapes.append((int(t_shape[3]), int(t_shape[1])))
    mid = min(MAX_MID_CHANNELS, int(shapes.student['pre_logits'].shape[-1]))
    return ReviewKDFusion(out_shapes=tuple(out_shapes), mid_channels=mid,
                          dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    s_names, _ = levels(feats_s, feats_t)
    return (tuple(as_map(feats_s[name]) for name in s_names),)
