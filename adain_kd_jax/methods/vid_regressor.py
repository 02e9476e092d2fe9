"""VID's regressors, trained with the student (params under params['vid']).

One per distilled stage, as RepDistiller's `VIDLoss` module
(`distiller_zoo/VID.py`): three 1x1 convolutions without bias, ReLU between
them, from the student's channels through the teacher's (RepDistiller's
`VIDLoss(s, t, t)`: the middle width is the teacher's) to the teacher's,
PyTorch's default initialisation; and a per-channel `alpha` (RepDistiller's
`log_scale`) of the predicted variance `softplus(alpha) + eps`, initialised
so that the variance starts at `init_pred_var`. A student map taller than
the teacher's is first reduced to the teacher's size by adaptive average
pooling, as RepDistiller does before its regressor. The loss they feed is
`losses/vid.py`; the `VID` term declares them with `VIDAdapter`, their
output is `Outputs.adapted['vid']['stage<k>'] = (mean_NHWC, alpha_C)`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax import losses
from adain_kd_jax.methods import base

# PyTorch's default conv init, U(+-1 / sqrt(fan_in)) (kaiming_uniform_ with
# a = sqrt(5)): variance 1 / (3 fan_in).
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                    'uniform')


class VIDRegressor(nn.Module):
  """VID's regressor at one stage: the predicted mean and its `alpha`.

  Attributes:
    features: the teacher's channel count (also the middle width).
    teacher_hw: the teacher map's (H, W).
    alpha_init: the initial alpha (`losses.vid_alpha_init`).
    dtype: computation dtype of the convolutions (alpha stays float32).
  """
  features: int
  teacher_hw: tuple[int, int]
  alpha_init: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_NHWC):
    """Returns (mean_NHWC, alpha_C)."""
    t_h, t_w = self.teacher_hw
    if x_NHWC.shape[1] > t_h:  # RepDistiller decides on the heights.
      x_NHWC = losses.adaptive_avg_pool(x_NHWC, t_h, t_w)
    x = x_NHWC
    for i in range(3):
      if i:
        x = nn.relu(x)
      x = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                  kernel_init=_TORCH_CONV_INIT, name=f'conv{i + 1}')(x)
    alpha = self.param(
        'alpha', lambda _, shape: jnp.full(shape, self.alpha_init,
                                           jnp.float32), (self.features,))
    return x, alpha


class VIDRegressors(nn.Module):
  """One VID regressor per named feature point.

  Attributes:
    shapes: ((feature_name, teacher_channels, teacher_H, teacher_W), ...).
    alpha_init: the initial alpha of every channel.
  """
  shapes: tuple[tuple[str, int, int, int], ...]
  alpha_init: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, Any]):
    return {name: VIDRegressor(c, (h, w), self.alpha_init, dtype=self.dtype,
                               name=name)(features[name])
            for name, c, h, w in self.shapes}


@dataclasses.dataclass(frozen=True)
class VIDAdapter(base.Adapter):
  """VID's regressors at `stages`, to the teacher's maps.

  `build` raises ValueError naming the stage where the student's map is
  taller than the teacher's but narrower, or not taller but wider (no
  pooling matches the two).
  """
  key = 'vid'
  init_stream = 3
  batch_norm = False
  init_pred_var: float = losses.VID_INIT_PRED_VAR
  eps: float = losses.VID_EPS

  def build(self, config, shapes):
    del config
    layout = []
    for k in self.stages:
      name = f'stage{k}'
      _, s_h, s_w, _ = shapes.student[name].shape
      _, t_h, t_w, t_c = shapes.teacher[name].shape
      if (s_w < t_w) if s_h > t_h else (s_w > t_w):
        raise ValueError(
            f'VID at {name}: the student map is {s_h}x{s_w}, the teacher '
            f'map {t_h}x{t_w}; pooling makes one of them the size of the '
            'other only when it is at least as large in both H and W.')
      layout.append((name, int(t_c), int(t_h), int(t_w)))
    return VIDRegressors(
        shapes=tuple(layout), dtype=shapes.dtype,
        alpha_init=losses.vid_alpha_init(self.init_pred_var, self.eps))
