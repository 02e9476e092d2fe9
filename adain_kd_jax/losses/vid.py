"""VID's loss: variational information distillation (Ahn et al., CVPR 2019).

Written after RepDistiller's `distiller_zoo/VID.py` (`VIDLoss`), the code of
the published CIFAR-100 numbers. A regressor trained with the student
(`methods/vid_regressor.py`) predicts the teacher's map from the student's
as the mean of a Gaussian with a learnt per-channel variance
`var_c = softplus(alpha_c) + eps`; the loss is that Gaussian's negative
log-likelihood of the teacher's map, without the constant:

  L = mean_{n,h,w,c} 0.5 * ((t - mu)^2 / var_c + log var_c).

Pure functions, as the other loss modules: arrays in, scalars out, the
teacher's map under `stop_gradient`, computed in float32 (float64 stays
float64). Shape suffixes: `N` batch, `H`/`W` spatial, `C` channels.
"""

import jax
import jax.numpy as jnp
import numpy as np

from adain_kd_jax.losses import checks
VID_EPS = 1e-5  # RepDistiller's eps, the variance's floor.
VID_INIT_PRED_VAR = 5.0  # RepDistiller's init_pred_var.


def _pool_axis(x: jax.Array, axis: int, out: int) -> jax.Array:
  """Adaptive average pooling of one axis to `out` bins (torch's bins)."""
  size = jnp.shape(x)[axis]
  if size == out:
    return x
  # Bin i averages [floor(i * size / out), ceil((i + 1) * size / out)).
  bins = [jnp.mean(jax.lax.slice_in_dim(
      x, (i * size) // out, -(-(i + 1) * size // out), axis=axis),
                   axis=axis, keepdims=True) for i in range(out)]
  return jnp.concatenate(bins, axis=axis)


def adaptive_avg_pool(f_NHWC: jax.Array, h: int, w: int) -> jax.Array:
  """torch's `adaptive_avg_pool2d` of (N, H, W, C) to (N, h, w, C).

  Output bin i of an axis of size S averages the inputs
  [floor(i S / o), ceil((i + 1) S / o)); the sizes need not divide.

  Raises:
    ValueError: unless `f_NHWC` is 4-D and 1 <= h <= H, 1 <= w <= W.
  """
  checks.check_4d('feature map', f_NHWC)
  _, big_h, big_w, _ = jnp.shape(f_NHWC)
  if not (1 <= h <= big_h and 1 <= w <= big_w):
    raise ValueError(
        f'adaptive_avg_pool: cannot pool a {big_h}x{big_w} map to {h}x{w}; '
        'the output must be at least 1x1 and at most the input size.')
  return _pool_axis(_pool_axis(f_NHWC, 1, h), 2, w)


def vid_alpha_init(init_pred_var: float = VID_INIT_PRED_VAR,
                   eps: float = VID_EPS) -> float:
  """The alpha whose variance `softplus(alpha) + eps` is `init_pred_var`.

  `log(exp(init_pred_var - eps) - 1)`, in float64, as RepDistiller
  initialises its `log_scale`.

  Raises:
    ValueError: unless init_pred_var > eps > 0.
  """
  if not init_pred_var > eps > 0:
    raise ValueError(
        f'VID: init_pred_var={init_pred_var} and eps={eps} must satisfy '
        'init_pred_var > eps > 0.')
  return float(np.log(np.expm1(np.float64(init_pred_var) - eps)))


def vid_variance(alpha_C: jax.Array, eps: float = VID_EPS) -> jax.Array:
  """The predicted variance per channel: `softplus(alpha) + eps`."""
  return jax.nn.softplus(checks.as_float(alpha_C)) + eps


def vid_loss(f_t_NHWC: jax.Array, mean_NHWC: jax.Array, alpha_C: jax.Array,
             eps: float = VID_EPS) -> jax.Array:
  """VID's loss at one feature pair (RepDistiller `VIDLoss.forward`).

  `mean_{n,h,w,c} 0.5 ((t - mu)^2 / var_c + log var_c)` with
  `var_c = softplus(alpha_c) + eps`, no gradient into the teacher's map t.
  As RepDistiller, a teacher map larger than the prediction is first reduced
  to the prediction's (H, W) by adaptive average pooling (RepDistiller pools
  the student's map before the regressor when it is the larger one: the
  regressor's job, `methods/vid_regressor.py`).

  Args:
    f_t_NHWC: teacher feature, shape (N, Ht, Wt, C).
    mean_NHWC: the regressor's prediction mu, shape (N, H, W, C) with
      H <= Ht and W <= Wt.
    alpha_C: the variance parameters, shape (C,).
    eps: the variance's floor (1e-5 as published).

  Returns:
    Scalar float32 loss (float64 for float64 inputs).

  Raises:
    ValueError: on mismatched batch sizes or channels, an alpha of another
      shape than (C,), or a prediction larger than the teacher's map.
  """
  checks.check_same_channels_and_batch(f_t_NHWC, mean_NHWC)
  _, t_h, t_w, c = jnp.shape(f_t_NHWC)
  _, m_h, m_w, _ = jnp.shape(mean_NHWC)
  if jnp.shape(alpha_C) != (c,):
    raise ValueError(f'VID: alpha has shape {jnp.shape(alpha_C)}, the maps '
                     f'have {c} channels; it must be ({c},).')
  if m_h > t_h or m_w > t_w:
    raise ValueError(
        f'VID: the prediction is {m_h}x{m_w}, larger than the teacher map '
        f'{t_h}x{t_w}; the regressor pools the student map to the '
        "teacher's size first.")
  f_t_NHWC = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  f_t_NHWC = adaptive_avg_pool(f_t_NHWC, m_h, m_w)
  var_C = vid_variance(alpha_C, eps)
  nll = 0.5 * (jnp.square(f_t_NHWC - checks.as_float(mean_NHWC)) / var_C
               + jnp.log(var_C))
  return jnp.mean(nll)
