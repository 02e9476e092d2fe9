"""SRRL's connector, trained with the student.

As the SRRL of DefangChen/SimKD (`models/util.py`): on the student's pooled
feature (a 1x1 map there), a 1x1 convolution without bias to the teacher's
width (PyTorch's default initialisation), BatchNorm2d and ReLU; on a
pooled (N, D) vector that is a dense layer without bias, BatchNorm over the
batch and ReLU. Its output `e_s` feeds `losses.srrl_loss`. The term that
declares it is not written yet (docs/method.md, "Baselines").
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's default conv init, U(+-1 / sqrt(fan_in)) (kaiming_uniform_ with
# a = sqrt(5)): variance 1 / (3 fan_in).
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                    'uniform')


class SRRLConnector(nn.Module):
  """1x1 conv (as a dense layer, no bias) + BatchNorm + ReLU, to `features`.

  Attributes:
    features: the teacher's pooled width.
    dtype: computation dtype.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_s_ND, *, train: bool):
    """Returns e_s_ND, the connected student feature."""
    x = nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                 kernel_init=_TORCH_CONV_INIT, name='conv')(f_s_ND)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype, name='bn')(x)
    return nn.relu(x)
