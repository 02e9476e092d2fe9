"""SRRL's loss: softmax regression representation learning (Yang et al.,
ICLR 2021).

Written after the SRRL of DefangChen/SimKD (`models/util.py` `SRRL`,
`helper/loops.py`), the code of its published CIFAR-100 numbers (the
authors' jingyang2017/KD_SRRL publishes ImageNet only): the student's pooled
feature goes through a connector (1x1 convolution, BatchNorm, ReLU) to the
teacher's width, `e_s`; the loss is

  L = mean (e_s - f_t)^2 + mean (classify(e_s) - z_t)^2,

feature matching with the teacher's pooled feature `f_t` and softmax
regression: the teacher's own classifier on `e_s` against the teacher's
logits `z_t`, both `nn.MSELoss` (means over every element). `classify` is
the frozen teacher's classifier as a function, so the loss stays pure and
its gradient flows through the classifier into `e_s`. Pure, float32
(float64 stays float64), the teacher's side without gradient. Shape
suffixes: N batch, D features, K classes.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks


def srrl_terms(e_s_ND: jax.Array, f_t_ND: jax.Array, logits_t_NK: jax.Array,
               classify: Callable[[jax.Array], jax.Array]
               ) -> tuple[jax.Array, jax.Array]:
  """(feature matching, softmax regression), SRRL's two MSEs.

  Raises:
    ValueError: unless e_s and f_t are (N, D) of the same shape and the
      logits (N, K) of the same N.
  """
  if (jnp.ndim(e_s_ND) != 2 or jnp.shape(e_s_ND) != jnp.shape(f_t_ND)
      or jnp.ndim(logits_t_NK) != 2
      or jnp.shape(logits_t_NK)[0] != jnp.shape(e_s_ND)[0]):
    raise ValueError(
        f'SRRL: the connected student feature {jnp.shape(e_s_ND)}, the '
        f'teacher feature {jnp.shape(f_t_ND)} and logits '
        f'{jnp.shape(logits_t_NK)} must be (N, D), (N, D) and (N, K).')
  e_s = checks.as_float(e_s_ND)
  f_t = jax.lax.stop_gradient(checks.as_float(f_t_ND))
  z_t = jax.lax.stop_gradient(checks.as_float(logits_t_NK))
  z_sc = checks.as_float(classify(e_s))
  return (jnp.mean(jnp.square(e_s - f_t)),
          jnp.mean(jnp.square(z_sc - z_t)))


def srrl_loss(e_s_ND: jax.Array, f_t_ND: jax.Array, logits_t_NK: jax.Array,
              classify: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """SRRL: feature matching + softmax regression, each weight 1 (SimKD's
  `criterion_kd(trans_feat_s, feat_t) + criterion_kd(pred_feat_s,
  logit_t)`)."""
  fm, sr = srrl_terms(e_s_ND, f_t_ND, logits_t_NK, classify)
  return fm + sr
