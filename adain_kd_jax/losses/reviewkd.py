"""ReviewKD's loss: knowledge review (Chen et al., CVPR 2021).

Written after mdistiller's `mdistiller/distillers/ReviewKD.py`, the code of
its CIFAR-100 table: the hierarchical context loss (`hcl_loss`) between the
student's fused features and the teacher's, at every level the mean squared
error of the maps plus that of their adaptive average pools to 4x4, 2x2 and
1x1 (those smaller than the map), weighted 1, 1/2, 1/4, 1/8 and divided by
the sum of the weights used; summed over the levels. The fusion itself
(attention-based, trained with the student) is
`methods/reviewkd_abf.py`; `nearest_resize` is the resize it uses. Pure,
float32 (float64 stays float64), the teacher's side without gradient.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses import vid

# The pooled sizes of the hierarchical context loss, finest first.
HCL_LEVELS = (4, 2, 1)


def nearest_resize(x_NHWC: jax.Array, h: int, w: int) -> jax.Array:
  """torch's `F.interpolate(x, (h, w), mode='nearest')`: output pixel i of
  an axis of size S takes input floor(i S / o)."""
  _, big_h, big_w, _ = jnp.shape(x_NHWC)
  rows = (jnp.arange(h) * big_h) // h
  cols = (jnp.arange(w) * big_w) // w
  return x_NHWC[:, rows][:, :, cols]


def hcl_level(f_s_NHWC: jax.Array, f_t_NHWC: jax.Array) -> jax.Array:
  """The hierarchical context loss at one level (one pair of maps)."""
  checks.check_4d('ReviewKD student map', f_s_NHWC)
  checks.check_4d('ReviewKD teacher map', f_t_NHWC)
  if jnp.shape(f_s_NHWC) != jnp.shape(f_t_NHWC):
    raise ValueError(
        f'ReviewKD: the fused student map {jnp.shape(f_s_NHWC)} and the '
        f'teacher map {jnp.shape(f_t_NHWC)} need the same shape.')
  f_s = checks.as_float(f_s_NHWC)
  f_t = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  h = jnp.shape(f_s)[1]
  loss, weight, total = jnp.mean(jnp.square(f_s - f_t)), 1.0, 1.0
  for level in HCL_LEVELS:
    if level >= h:
      continue
    weight /= 2.0
    pooled_s = vid.adaptive_avg_pool(f_s, level, level)
    pooled_t = vid.adaptive_avg_pool(f_t, level, level)
    loss = loss + jnp.mean(jnp.square(pooled_s - pooled_t)) * weight
    total += weight
  return loss / total


def hcl_loss(s_maps: list[jax.Array], t_maps: list[jax.Array]) -> jax.Array:
  """mdistiller's `hcl_loss`: `hcl_level` summed over the paired levels.

  Raises:
    ValueError: for lists of different lengths or maps of different shapes.
  """
  if len(s_maps) != len(t_maps) or not s_maps:
    raise ValueError(f'ReviewKD: {len(s_maps)} fused student maps and '
                     f'{len(t_maps)} teacher maps; one of each per level.')
  return sum(hcl_level(f_s, f_t) for f_s, f_t in zip(s_maps, t_maps))
