"""SimKD's loss and prediction: knowledge distillation with the reused
teacher classifier (Chen et al., CVPR 2022).

Written after DefangChen/SimKD (`models/util.py` `SimKD`, `helper/loops.py`
`train_distill` and `validate_distill`): the student's last map before the
pooling goes through a projector (`methods/simkd_projector.py`) to the
teacher's width, `p_s`; the loss is

  L = mean (p_s - align(f_t))^2,

`nn.MSELoss` (a mean over every element) against the teacher's last map
before the pooling, `f_t`, first average-pooled (torch's
`adaptive_avg_pool2d`) to p_s's size when it is larger (the reference's
"spatial dimension alignment": the smaller map's H sets both sides' H and
W). The model predicts with the teacher's own classifier on the pooled
projection, `classify(mean_HW p_s)`, in training (its accuracy) and in
evaluation. Pure, float32 (float64 stays float64), the teacher's side
without gradient. Shape suffixes: N batch, H W spatial, C channels, K
classes.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses import vid


def simkd_aligned_size(s_h: int, t_h: int) -> int:
  """The side both maps are pooled to: the smaller H (the reference pools
  the larger map to (H, H) of the smaller, and the smaller to itself)."""
  return min(int(s_h), int(t_h))


def simkd_align(f_NHWC: jax.Array, size: int) -> jax.Array:
  """`f` average-pooled to (size, size), as torch's
  `adaptive_avg_pool2d(f, (size, size))` (the identity at its own size)."""
  return vid.adaptive_avg_pool(f_NHWC, size, size)


def simkd_loss(p_s_NHWC: jax.Array, f_t_NHWC: jax.Array) -> jax.Array:
  """mean (p_s - align(f_t))^2, the teacher's map pooled to p_s's size.

  Raises:
    ValueError: unless both are 4-D with the same N and C and p_s is
      square and no larger than f_t.
  """
  checks.check_4d('SimKD projected student map p_s', p_s_NHWC)
  checks.check_4d('SimKD teacher map f_t', f_t_NHWC)
  n, h, w, c = jnp.shape(p_s_NHWC)
  n_t, h_t, w_t, c_t = jnp.shape(f_t_NHWC)
  if n != n_t or c != c_t or h != w or h > min(h_t, w_t):
    raise ValueError(
        f'SimKD: the projected student map {jnp.shape(p_s_NHWC)} must be '
        f'square, no larger than the teacher map {jnp.shape(f_t_NHWC)}, '
        'with its batch and channels.')
  p_s = checks.as_float(p_s_NHWC)
  target = jax.lax.stop_gradient(simkd_align(checks.as_float(f_t_NHWC), h))
  return jnp.mean(jnp.square(p_s - target))


def simkd_logits(p_s_NHWC: jax.Array,
                 classify: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """(N, K): the teacher's classifier on the mean over H and W of the
  projected map (the reference's `cls_t(avg_pool(trans_feat_s))`)."""
  checks.check_4d('SimKD projected student map p_s', p_s_NHWC)
  return checks.as_float(classify(jnp.mean(p_s_NHWC, axis=(1, 2))))
