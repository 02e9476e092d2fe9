"""The losses of FSP and AB, the methods whose distillation is a first
training phase (RepDistiller's `init()` in `helper/pretrain.py`).

FSP (Yim et al., CVPR 2017), after RepDistiller's `distiller_zoo/FSP.py`:
the flow of solution procedure between consecutive maps g_i, g_{i+1} of a
network is the Gram matrix over positions

  G_i[c_top, c_bot] = mean_{h, w} g_{i+1}[h, w, c_top] g_i[h, w, c_bot],

the larger of the two maps first adaptive-average-pooled to the smaller's
height (square, (H, H), as the reference); the loss of one pair of
consecutive maps is mean_{n, c_top, c_bot} (G_s - G_t)^2, and the method's
loss is the sum over the pairs. Student and teacher must have the same
channels at every map (the reference raises otherwise).

AB (Heo et al., AAAI 2019), after RepDistiller's `distiller_zoo/AB.py`: on
the student's pre-ReLU maps through its connectors (s) and the teacher's
pre-ReLU maps (t), with margin mu = 1,

  l(s, t) = sum (s + mu)^2 [s > -mu and t <= 0]
                + (s - mu)^2 [s <= mu and t > 0],

weighted 2^(i - n + 1) at map i of n (the last map 1), divided by the batch
size and multiplied by 3 / 1000. The indicators carry no gradient (as
torch's `.float()` of a comparison).

Pure; float32 (float64 stays float64); the teacher's side without gradient.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses import vid

AB_MARGIN = 1.0  # RepDistiller's ABLoss(margin=1.0).
AB_SCALE = 3.0 / 1000.0  # RepDistiller's `l / 1000 * 3`.


def fsp_matrix(bot_NHWC: jax.Array, top_NHWC: jax.Array) -> jax.Array:
  """FSP.compute_fsp for one pair: (N, C_top, C_bot).

  The larger map is pooled to (H, H) of the smaller (the reference pools
  to a square of the smaller height).
  """
  bot, top = checks.as_float(bot_NHWC), checks.as_float(top_NHWC)
  b_h, t_h = jnp.shape(bot)[1], jnp.shape(top)[1]
  if b_h > t_h:
    bot = vid.adaptive_avg_pool(bot, t_h, t_h)
  elif b_h < t_h:
    top = vid.adaptive_avg_pool(top, b_h, b_h)
  _, h, w, _ = jnp.shape(bot)
  return jnp.einsum('nhwt,nhwb->ntb', top, bot) / (h * w)


def fsp_matrices(maps: list[jax.Array]) -> list[jax.Array]:
  """The FSP matrices of consecutive maps (FSP.compute_fsp)."""
  for f in maps:
    checks.check_4d('FSP map', f)
  return [fsp_matrix(bot, top) for bot, top in zip(maps[:-1], maps[1:])]


def fsp_loss(s_maps: list[jax.Array], t_maps: list[jax.Array]) -> jax.Array:
  """FSP's loss: sum over consecutive pairs of mean (G_s - G_t)^2.

  Args:
    s_maps: the student's maps (N, H, W, C), first first (RepDistiller:
      `feat_s[:-1]`, the stem's output and every stage's).
    t_maps: the teacher's maps of the same channels.

  Raises:
    ValueError: for fewer than two maps, lists of different lengths, or
      student and teacher maps whose batch or channels differ.
  """
  if not len(s_maps) == len(t_maps) >= 2:
    raise ValueError(
        f'FSP: {len(s_maps)} student maps and {len(t_maps)} teacher maps; '
        'the same number, at least two.')
  for i, (f_s, f_t) in enumerate(zip(s_maps, t_maps)):
    if (jnp.shape(f_s)[0], jnp.shape(f_s)[-1]) != (jnp.shape(f_t)[0],
                                                   jnp.shape(f_t)[-1]):
      raise ValueError(
          f'FSP: student map {i} {jnp.shape(f_s)} and teacher map '
          f'{jnp.shape(f_t)} need the same batch and channels.')
  t_maps = [jax.lax.stop_gradient(f) for f in t_maps]
  return sum(jnp.mean(jnp.square(g_s - g_t)) for g_s, g_t in
             zip(fsp_matrices(s_maps), fsp_matrices(t_maps)))


def ab_stage_loss(s_NHWC: jax.Array, t_NHWC: jax.Array,
                  margin: float = AB_MARGIN) -> jax.Array:
  """ABLoss.criterion_alternative_l2 at one map: the sum over the map and
  the batch (not yet weighted or divided)."""
  s = checks.as_float(s_NHWC)
  t = jax.lax.stop_gradient(checks.as_float(t_NHWC))
  loss = (jnp.square(s + margin) * ((s > -margin) & (t <= 0))
          + jnp.square(s - margin) * ((s <= margin) & (t > 0)))
  return jnp.sum(loss)


def ab_loss(s_maps: list[jax.Array], t_maps: list[jax.Array],
            margin: float = AB_MARGIN) -> jax.Array:
  """AB's loss: sum_i 2^(i - n + 1) l_i / N * 3 / 1000 (the sum of
  ABLoss's groups, as RepDistiller's `init()` adds them).

  Args:
    s_maps: the student's pre-ReLU maps through its connectors, first
      first, each the shape of its teacher map.
    t_maps: the teacher's pre-ReLU maps.
    margin: mu (RepDistiller: 1.0).

  Raises:
    ValueError: for empty lists or lists of different lengths, or maps of
      different shapes.
  """
  if not len(s_maps) == len(t_maps) >= 1:
    raise ValueError(
        f'AB: {len(s_maps)} student maps and {len(t_maps)} teacher maps; '
        'one of each per stage, at least one.')
  n = len(s_maps)
  total = 0.0
  for i, (f_s, f_t) in enumerate(zip(s_maps, t_maps)):
    checks.check_4d('AB student map', f_s)
    if jnp.shape(f_s) != jnp.shape(f_t):
      raise ValueError(
          f'AB: student map {jnp.shape(f_s)} (after its connector) and '
          f'teacher map {jnp.shape(f_t)} need the same shape.')
    weight = 2.0 ** (i - n + 1)
    total = total + (weight * ab_stage_loss(f_s, f_t, margin)
                     / jnp.shape(f_s)[0] * AB_SCALE)
  return total
