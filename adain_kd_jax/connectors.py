"""Student -> teacher channel adapters (the connector `r` of METHOD.md).

A connector is a 1x1 convolution to the teacher's channel count followed by
BatchNorm. It is trained with the student and dropped at deployment. Spatial
sizes are left alone: AdaIN moves only statistics, and FitNet resizes in the
loss.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Connector(nn.Module):
  """1x1 conv (no bias) + BatchNorm, to `features` channels."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_NHWC, *, train: bool):
    x = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                kernel_init=nn.initializers.variance_scaling(
                    2.0, 'fan_out', 'normal'),
                name='conv')(x_NHWC)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, dtype=self.dtype, name='bn')(x)


class Connectors(nn.Module):
  """One connector per named feature point.

  Attributes:
    channels: ((feature_name, teacher_channels), ...), e.g. (('stage2', 32),).
  """
  channels: tuple[tuple[str, int], ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, Any], *, train: bool):
    return {name: Connector(c, dtype=self.dtype, name=name)(
        features[name], train=train) for name, c in self.channels}
