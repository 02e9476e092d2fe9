"""CC's embedding heads, trained with the student (params under params['cc']).

As RepDistiller's CC (`train_student.py`, distill 'correlation'): two
`LinearEmbed`s, one on the student's `pre_logits` and one on the teacher's,
each a single linear layer with bias to `dim` (128, RepDistiller's
`feat_dim`) dimensions, PyTorch's default `nn.Linear` initialisation, no
normalisation; both are trained (the teacher's backbone is not). The loss
they feed is `losses.cc_loss`; the `CC` term declares them with `CCAdapter`,
their output is `Outputs.adapted['cc'] = (e_s_ND, e_t_ND)`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax.methods import base

# PyTorch's nn.Linear default: weight and bias U(+-1 / sqrt(fan_in)).
_TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                      'uniform')


def _torch_bias_init(fan_in: int):
  """U(+-1 / sqrt(fan_in)), as nn.Linear's bias."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class CCHeads(nn.Module):
  """CC's linear embeddings of student and teacher features.

  Attributes:
    dim: the embedding size (128 as published; `config.cc.dim`).
  """
  dim: int = 128

  @nn.compact
  def __call__(self, f_s_NC, f_t_NC):
    """Returns (e_s_ND, e_t_ND), float32."""
    out = []
    for name, f in (('embed_s', f_s_NC), ('embed_t', f_t_NC)):
      f = jnp.reshape(f, (f.shape[0], -1)).astype(jnp.float32)
      out.append(nn.Dense(self.dim, kernel_init=_TORCH_KERNEL_INIT,
                          bias_init=_torch_bias_init(f.shape[1]),
                          name=name)(f))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class CCAdapter(base.Adapter):
  """CC's embedding heads of size `dim`, on both networks' `pre_logits`."""
  key = 'cc'
  init_stream = 4
  batch_norm = False
  dim: int = 128

  def build(self, config, shapes):
    del config, shapes
    return CCHeads(dim=self.dim)

  def inputs(self, feats_s, feats_t):
    return feats_s['pre_logits'], feats_t['pre_logits']
