"""CRD's embedding heads, trained with the student (params under params['crd']).

A linear map of each `pre_logits` feature to 128 dimensions, then L2
normalisation, as RepDistiller's `Embed` + `Normalize`. The loss, memory bank
and sampler they feed are `losses/crd.py`. The `CRD` term declares them with
`CRDAdapter`; their output is `Outputs.adapted['crd']` = (e_s_ND, e_t_ND).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.losses.crd import crd_embed_normalize
from adain_kd_jax.methods import base


class CRDHeads(nn.Module):
  """CRD's linear embeddings of student and teacher features, L2-normalised.

  Both heads (`embed_s`, `embed_t`) are trained with the student (the
  teacher's backbone is not), as RepDistiller's `Embed` + `Normalize`.

  Attributes:
    dim: the embedding size (128 as published; `config.crd.dim`).
  """
  dim: int = 128

  @nn.compact
  def __call__(self, f_s_NC, f_t_NC):
    """Returns the unit-norm embeddings (e_s_ND, e_t_ND), float32."""
    e_s = nn.Dense(self.dim, name='embed_s')(f_s_NC.astype(jnp.float32))
    e_t = nn.Dense(self.dim, name='embed_t')(f_t_NC.astype(jnp.float32))
    return crd_embed_normalize(e_s), crd_embed_normalize(e_t)


@dataclasses.dataclass(frozen=True)
class CRDAdapter(base.Adapter):
  """CRD's embedding heads of size `dim`, on both networks' `pre_logits`."""
  key = 'crd'
  init_stream = 2
  batch_norm = False
  dim: int = 128

  def build(self, config, shapes):
    del config, shapes
    return CRDHeads(dim=self.dim)

  def inputs(self, feats_s, feats_t):
    return feats_s['pre_logits'], feats_t['pre_logits']
