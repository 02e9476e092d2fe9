"""FT's losses: factor transfer (Kim et al., NeurIPS 2018, "Paraphrasing
Complex Network: Network Compression via Factor Transfer").

Written after RepDistiller's `FactorTransfer` (`distiller_zoo/FT.py`, with
its defaults p1 = 2, p2 = 1, as `train_student.py` builds it) and its
initialisation stage (`helper/pretrain.py`). The student's factor (its
last stage map through the translator) and the teacher's (the teacher's
last stage map through the paraphraser's encoder) are each reduced to

  factor(f) = normalize(mean_c f^2),

the channel mean of the squared map, flattened over (H, W) and
L2-normalised per example (torch's `F.normalize`: / max(||.||, 1e-12)); the
larger of the two maps is first adaptive-average-pooled to the smaller's
H x H. The loss is

  L_ft = mean |factor(f_s) - factor(f_t)|   (p2 = 1),

and the initialisation stage trains the paraphraser alone on the
reconstruction of the teacher's map, `nn.MSELoss`:

  L_init = mean (rec - f_t)^2.

Pure, float32 (float64 stays float64). Shape suffixes: N batch, H, W the
map, C channels.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses.relational import l2_normalize
from adain_kd_jax.losses.vid import adaptive_avg_pool


def ft_factor(f_NHWC: jax.Array) -> jax.Array:
  """RepDistiller's `FactorTransfer.factor` (p1 = 2): (N, H W), each row
  the L2-normalised channel mean of the squared map."""
  checks.check_4d('FT factor', f_NHWC)
  f = checks.as_float(f_NHWC)
  return l2_normalize(jnp.mean(jnp.square(f), axis=-1).reshape(
      f.shape[0], -1), axis=1)


def ft_loss(factor_s_NHWC: jax.Array, factor_t_NHWC: jax.Array) -> jax.Array:
  """RepDistiller's `FactorTransfer.factor_loss` (p1 = 2, p2 = 1).

  The map with the larger H is adaptive-average-pooled to the other's
  H x H first, as the reference does. Gradients reach both factors (the
  term stops the teacher's).

  Raises:
    ValueError: unless both are 4-D with the same batch size.
  """
  checks.check_4d('FT student factor', factor_s_NHWC)
  checks.check_4d('FT teacher factor', factor_t_NHWC)
  if jnp.shape(factor_s_NHWC)[0] != jnp.shape(factor_t_NHWC)[0]:
    raise ValueError(
        f'FT: the student factor {jnp.shape(factor_s_NHWC)} and the '
        f'teacher factor {jnp.shape(factor_t_NHWC)} must have the same '
        'batch size.')
  s_h, t_h = jnp.shape(factor_s_NHWC)[1], jnp.shape(factor_t_NHWC)[1]
  if s_h > t_h:
    factor_s_NHWC = adaptive_avg_pool(factor_s_NHWC, t_h, t_h)
  elif s_h < t_h:
    factor_t_NHWC = adaptive_avg_pool(factor_t_NHWC, s_h, s_h)
  return jnp.mean(jnp.abs(ft_factor(factor_s_NHWC) -
                          ft_factor(factor_t_NHWC)))


def ft_reconstruction_loss(rec_NHWC: jax.Array,
                           f_t_NHWC: jax.Array) -> jax.Array:
  """FT's initialisation loss, `nn.MSELoss()(rec, f_t)`: the paraphraser's
  reconstruction of the teacher's map, mean over every element; the
  teacher's map gets no gradient.

  Raises:
    ValueError: unless both are 4-D of the same shape.
  """
  checks.check_4d('FT reconstruction', rec_NHWC)
  if jnp.shape(rec_NHWC) != jnp.shape(f_t_NHWC):
    raise ValueError(
        f'FT: the reconstruction {jnp.shape(rec_NHWC)} must have the '
        f'teacher map\'s shape {jnp.shape(f_t_NHWC)}.')
  f_t = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  return jnp.mean(jnp.square(checks.as_float(rec_NHWC) - f_t))
