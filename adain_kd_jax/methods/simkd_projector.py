"""SimKD's projector, trained with the student.

As the `SimKD` module of DefangChen/SimKD (`models/util.py`): the student's
last map before the pooling, average-pooled to the teacher's H first when it
is larger (its "spatial dimension alignment"), then a bottleneck to the
teacher's width C_t with a middle width C_t // factor:

  conv1x1 (C_s -> m) - BN - ReLU - conv3x3 (m -> m, padding 1) - BN - ReLU
  - conv1x1 (m -> C_t) - BN - ReLU,

convolutions without bias and with PyTorch's default initialisation (the
reference's depthwise 3x3 is commented out there: a full 3x3 here too).
Parameters: C_s m + 9 m^2 + m C_t + 2 (m + m + C_t).

The `SimKD` term (`feature_terms.py`) declares it with `SimKDAdapter` on the
student's last stage (params under params['simkd']); its output is
`Outputs.adapted['simkd']` = p_s_NHWC, which `losses.simkd_loss` matches to
the teacher's last map and `losses.simkd_logits` classifies with the
teacher's classifier.
"""

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.models import layers


def last_stage(feats: dict[str, Any]) -> str:
  """'stage<S>': the name of a network's last stage map in `feats`."""
  stages = [int(m.group(1)) for m in map(re.compile(r'stage(\d+)$').match,
                                         feats) if m]
  return f'stage{max(stages)}'


class SimKDProjector(nn.Module):
  """Pool (when `pool_to`), then conv1x1-BN-ReLU, conv3x3-BN-ReLU,
  conv1x1-BN-ReLU to `features`.

  Attributes:
    features: the teacher's width C_t.
    factor: the bottleneck's reduction, the middle width C_t // factor.
    pool_to: the side the student map is pooled to first (the teacher's H,
      smaller than the student's), or 0 for none.
    dtype: computation dtype.
  """
  features: int
  factor: int = 2
  pool_to: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_s_NHWC, *, train: bool):
    """Returns p_s_NHWC, the projected student map."""
    x = f_s_NHWC
    if self.pool_to:
      x = losses.simkd_align(x, self.pool_to)
    mid = self.features // self.factor
    for i, (width, kernel) in enumerate(((mid, 1), (mid, 3),
                                         (self.features, 1))):
      x = layers.conv(width, kernel, 1, self.dtype,
                      kernel_init=layers.torch_default_init,
                      name=f'conv{i}')(x)
      x = layers.batch_norm(self.dtype, use_running_average=not train,
                            name=f'bn{i}')(x)
      x = nn.relu(x)
    return x


def projector_param_count(c_s: int, c_t: int, factor: int) -> int:
  """The reference's parameter count for widths C_s -> C_t: three bias-free
  convolutions and three BatchNorms (scale and bias)."""
  m = c_t // factor
  return c_s * m + 9 * m * m + m * c_t + 2 * (m + m + c_t)


@dataclasses.dataclass(frozen=True)
class SimKDAdapter(base.Adapter):
  """SimKD's projector on the student's last stage, to the teacher's
  width (`factor`: config.simkd.factor).

  `build` raises ValueError in one line where SimKD cannot reuse the
  teacher's classifier: where the teacher's classifier does not read the
  mean of its last stage map (another width: a head between them, as the
  MobileNetV2 and ShuffleNetV2 of the zoo have; the reference's
  `cls_t(avg_pool(...))` fails there too).
  """
  key = 'simkd'
  init_stream = 10
  factor: int = 2

  def build(self, config, shapes):
    if shapes.teacher is None:
      raise ValueError('SimKD needs a teacher: set config.teacher.')
    s_map = shapes.student[last_stage(shapes.student)]
    t_name = last_stage(shapes.teacher)
    t_map = shapes.teacher[t_name]
    c_t, d_t = int(t_map.shape[-1]), int(shapes.teacher['pre_logits'].shape[-1])
    if c_t != d_t:
      raise ValueError(
          f'SimKD reuses the teacher\'s classifier on its projected last '
          f'map, but config.teacher={config.teacher!r} classifies a {d_t}-'
          f'vector, not the mean of its {t_name} ({c_t} channels: a head '
          'lies between them); use another teacher or method.')
    if c_t < self.factor:
      raise ValueError(
          f'config.simkd.factor={self.factor} leaves no middle width for '
          f'the teacher\'s {c_t} channels; use a factor <= {c_t}.')
    s_h, t_h = int(s_map.shape[1]), int(t_map.shape[1])
    return SimKDProjector(features=c_t, factor=self.factor,
                          pool_to=t_h if s_h > t_h else 0,
                          dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    del feats_t
    return (feats_s[last_stage(feats_s)],)
