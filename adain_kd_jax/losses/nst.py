"""NST's loss: neuron selectivity transfer (Huang and Wang, 2017).

Written after RepDistiller's `distiller_zoo/NST.py` (`NSTLoss.nst_loss`), the
code of the CRD table's number: each channel's spatial activation pattern,
L2-normalised over the H*W positions, is one sample; the loss is the
squared maximum mean discrepancy between the teacher's and the student's
channels under the polynomial kernel `k(x, y) = (x . y)^2`:

  L = mean K(t, t) + mean K(s, s) - 2 mean K(s, t),

each mean over the batch and both channel axes (the channel counts may
differ). The larger map is first adaptive-average-pooled to the smaller
one's height, as a square (RepDistiller's `(H, H)`). Pure, float32 (float64
stays float64), the teacher's side without gradient.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses import relational
from adain_kd_jax.losses import vid


def _channels(f_NHWC: jax.Array) -> jax.Array:
  """(N, H, W, C) -> (N, C, H*W), each channel L2-normalised over H*W."""
  n, h, w, c = jnp.shape(f_NHWC)
  f = jnp.transpose(jnp.reshape(f_NHWC, (n, h * w, c)), (0, 2, 1))
  return relational.l2_normalize(f, axis=2)


def nst_poly_kernel(a_NCX: jax.Array, b_NCX: jax.Array) -> jax.Array:
  """RepDistiller's `poly_kernel`: (N, C_b, C_a) of (b_i . a_j)^2."""
  return jnp.square(jnp.einsum('nix,njx->nij', b_NCX, a_NCX))


def nst_loss(f_s_NHWC: jax.Array, f_t_NHWC: jax.Array) -> jax.Array:
  """NST at one pair of maps (RepDistiller `NSTLoss.nst_loss`, full loss).

  Raises:
    ValueError: unless both are 4-D with the same batch size.
  """
  checks.check_4d('NST student map', f_s_NHWC)
  checks.check_4d('NST teacher map', f_t_NHWC)
  if jnp.shape(f_s_NHWC)[0] != jnp.shape(f_t_NHWC)[0]:
    raise ValueError(f'NST: student {jnp.shape(f_s_NHWC)} and teacher '
                     f'{jnp.shape(f_t_NHWC)} maps need the same batch size.')
  f_s = checks.as_float(f_s_NHWC)
  f_t = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  s_h, t_h = jnp.shape(f_s)[1], jnp.shape(f_t)[1]
  if s_h > t_h:
    f_s = vid.adaptive_avg_pool(f_s, t_h, t_h)
  elif s_h < t_h:
    f_t = vid.adaptive_avg_pool(f_t, s_h, s_h)
  s, t = _channels(f_s), _channels(f_t)
  return (jax.lax.stop_gradient(jnp.mean(nst_poly_kernel(t, t)))
          + jnp.mean(nst_poly_kernel(s, s))
          - 2.0 * jnp.mean(nst_poly_kernel(s, t)))
