"""OFD's loss: a comprehensive overhaul of feature distillation (Heo et
al., ICCV 2019).

Written after mdistiller's `mdistiller/distillers/OFD.py`, the code of its
CIFAR-100 table: the student's maps before their final ReLU, through a
connector (1x1 conv + BN), against the teacher's maps before their ReLU,
adaptive-average-pooled to the student's size, with the partial L2

  d(s, t) = (s - m)^2   where s > m and t <= m,
            (s - t)^2   where s > t and m < t <= 0,
            (s - t)^2   where t > 0,
            0           elsewhere,

summed over the map and averaged over the batch, where the margin m of a
channel is the expectation of the teacher's negative responses under its
BatchNorm (`ofd_margin`). The stages are weighted 1, 1/2, 1/4, ... from the
last one back. Pure, float32 (float64 stays float64), the teacher's side
and the margin without gradient; the masks carry no gradient (as torch's
`.float()` of a comparison).
"""

import math

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses import vid

# mdistiller: where P(x < 0) <= 0.001 the margin is -3 scale instead.
OFD_MIN_NEGATIVE_MASS = 0.001


def ofd_margin(scale_C: jax.Array, bias_C: jax.Array) -> jax.Array:
  """OFD's margin per channel: E[x | x < 0] for x ~ N(bias, |scale|^2).

  With s = |scale|, m = bias: -s phi(m / s) / Phi(-m / s) + m where
  Phi(-m / s) > 0.001, else -3 s (mdistiller's `init_ofd_modules`; a
  channel of scale 0 gets 0, where mdistiller divides by zero).
  """
  s = jnp.abs(checks.as_float(scale_C))
  m = checks.as_float(bias_C)
  safe_s = jnp.where(s > 0, s, 1.0)
  z = m / safe_s
  mass = jax.scipy.stats.norm.cdf(-z)
  use = (s > 0) & (mass > OFD_MIN_NEGATIVE_MASS)
  safe_mass = jnp.where(use, mass, 1.0)
  expected = (-safe_s * jnp.exp(-jnp.square(z) / 2) / math.sqrt(2 * math.pi)
              / safe_mass + m)
  return jax.lax.stop_gradient(jnp.where(use, expected, -3.0 * s))


def ofd_partial_l2(s_NHWC: jax.Array, t_NHWC: jax.Array,
                   margin_C: jax.Array) -> jax.Array:
  """mdistiller's `feat_loss` at one stage: d(s, t) summed over (H, W, C),
  averaged over N; `t_NHWC` already the student map's size."""
  s = checks.as_float(s_NHWC)
  t = jax.lax.stop_gradient(checks.as_float(t_NHWC))
  m = jax.lax.stop_gradient(jnp.asarray(margin_C, s.dtype))
  loss = (jnp.square(s - m) * ((s > m) & (t <= m))
          + jnp.square(s - t) * ((s > t) & (t > m) & (t <= 0))
          + jnp.square(s - t) * (t > 0))
  return jnp.sum(jnp.mean(loss, axis=0))


def ofd_loss(s_maps: list[jax.Array], t_maps: list[jax.Array],
             margins: list[jax.Array]) -> jax.Array:
  """OFD over aligned stages (mdistiller `OFD.ofd_loss`, after the
  connectors): sum_i partial_l2_i / 2^(n - 1 - i), the last stage weight 1.

  Args:
    s_maps: the student's connected pre-ReLU maps, first stage first.
    t_maps: the teacher's pre-ReLU maps of the same stages; each is pooled
      to its student map's (H, W).
    margins: the teacher's margin per stage (`ofd_margin`), (C_t,) each.

  Raises:
    ValueError: for lists of different lengths, or maps whose batch or
      channels differ or whose teacher map is smaller than the student's.
  """
  if not len(s_maps) == len(t_maps) == len(margins) >= 1:
    raise ValueError(
        f'OFD: {len(s_maps)} student maps, {len(t_maps)} teacher maps and '
        f'{len(margins)} margins; one of each per stage, at least one.')
  n = len(s_maps)
  total = 0.0
  for i, (f_s, f_t, margin) in enumerate(zip(s_maps, t_maps, margins)):
    checks.check_4d('OFD student map', f_s)
    checks.check_4d('OFD teacher map', f_t)
    (b_s, h, w, c), (b_t, _, _, c_t) = jnp.shape(f_s), jnp.shape(f_t)
    if (b_s, c) != (b_t, c_t) or jnp.shape(margin) != (c_t,):
      raise ValueError(
          f'OFD: student map {jnp.shape(f_s)} (after its connector), teacher '
          f'map {jnp.shape(f_t)} and margin {jnp.shape(margin)} need the '
          'same batch and channels.')
    total = total + ofd_partial_l2(
        f_s, vid.adaptive_avg_pool(f_t, h, w), margin) / 2 ** (n - 1 - i)
  return total
