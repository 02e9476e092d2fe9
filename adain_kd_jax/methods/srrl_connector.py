"""SRRL's connector, trained with the student.

As the SRRL of DefangChen/SimKD (`models/util.py`): on the student's pooled
feature (a 1x1 map there), a 1x1 convolution without bias to the teacher's
width (PyTorch's default initialisation), BatchNorm2d and ReLU; on a
pooled (N, D) vector that is a dense layer without bias, BatchNorm over the
batch and ReLU. Its output `e_s` feeds `losses.srrl_loss`. The `SRRL` term
(`feature_terms.py`) declares it with `SRRLAdapter`, on the student's
'pre_logits' (params under params['srrl']); its output is
`Outputs.adapted['srrl']` = e_s_ND, the teacher's pooled width.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.methods import base

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


@dataclasses.dataclass(frozen=True)
class SRRLAdapter(base.Adapter):
  """SRRL's connector on the student's 'pre_logits', to the teacher's
  pooled width."""
  key = 'srrl'
  init_stream = 9

  def build(self, config, shapes):
    del config
    return SRRLConnector(features=int(shapes.teacher['pre_logits'].shape[-1]),
                         dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    del feats_t
    return (feats_s['pre_logits'],)
