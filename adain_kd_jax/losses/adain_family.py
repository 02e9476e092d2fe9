"""The AdaIN family of losses, and the terms every method shares.

Channel statistics, AdaIN, the AdaIN loss and the statistics-L2 ablation,
with the cross-entropy and Hinton KD terms they are combined with. Formulas:
docs/method.md, sections "Channel statistics", "AdaIN", "The AdaIN loss" and
"The objective". The baselines' losses live apart: FitNet, AT and DKD in
`baselines.py`, CRD (loss, memory bank, sampler, heads) in `crd.py`; the
checks and casts they share are in `checks.py`.

Pure functions: arrays in, scalars (or statistics) out. Shape suffixes: `N`
batch, `H`/`W` spatial, `C` channels, `K` classes.

The teacher is frozen (docs/method.md, "The AdaIN loss"): every teacher-side
input (`f_t`, `z_t`, teacher logits) is wrapped in `jax.lax.stop_gradient`
here, so that a caller that forgets to freeze them still gets the right
student gradients. Statistics and losses are computed in float32 (float64
stays float64), also for bfloat16 / float16 inputs.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from adain_kd_jax.losses import checks

# How the tail's output on the AdaIN map is judged (adain_loss `kind`).
ADAIN_LOSS_KINDS = ('mse', 'kl', 'ce')
# Which student statistics AdaIN puts into the teacher's map (`stats`); the
# others stay the teacher's own.
ADAIN_STATS = ('both', 'mean', 'std')


def cross_entropy(logits_NK: jax.Array,
                  labels_N: jax.Array,
                  mask_N: jax.Array | None = None) -> jax.Array:
  """Mean softmax cross-entropy with integer labels.

  Args:
    logits_NK: logits, shape (N, K).
    labels_N: integer class labels in [0, K), shape (N,).
    mask_N: optional weights, shape (N,) (1 = counts, 0 = padding). With a
      mask the result is sum(mask * ce) / sum(mask), and 0 where sum(mask) is
      0 (with finite gradients).

  Returns:
    Scalar float32 loss.
  """
  ce_N = optax.softmax_cross_entropy_with_integer_labels(
      checks.as_float(logits_NK), labels_N)
  if mask_N is None:
    return jnp.mean(ce_N)
  mask_N = jnp.asarray(mask_N).astype(ce_N.dtype)
  total = jnp.sum(mask_N)
  safe_total = jnp.where(total > 0, total, jnp.ones_like(total))
  return jnp.sum(ce_N * mask_N) / safe_total


def kd(student_logits_NK: jax.Array,
       teacher_logits_NK: jax.Array,
       temperature: float = 4.0) -> jax.Array:
  """Hinton KD loss, as in the CRD / RepDistiller benchmark.

  `tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))`, summed over classes
  and averaged over the batch. The teacher logits get no gradient. The
  gradient w.r.t. the student logits is
  `tau * (softmax(z_s / tau) - softmax(z_t / tau)) / N`.

  Args:
    student_logits_NK: student logits z_s, shape (N, K).
    teacher_logits_NK: teacher logits z_t, shape (N, K) (stop_gradient).
    temperature: softmax temperature tau > 0.

  Returns:
    Scalar float32 loss.
  """
  z_s_NK = checks.as_float(student_logits_NK)
  z_t_NK = jax.lax.stop_gradient(checks.as_float(teacher_logits_NK))
  log_p_s_NK = jax.nn.log_softmax(z_s_NK / temperature, axis=-1)
  log_p_t_NK = jax.nn.log_softmax(z_t_NK / temperature, axis=-1)
  p_t_NK = jnp.exp(log_p_t_NK)
  kl_N = jnp.sum(p_t_NK * (log_p_t_NK - log_p_s_NK), axis=-1)
  return temperature**2 * jnp.mean(kl_N)


def channel_stats(f_NHWC: jax.Array,
                  eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """Per-sample, per-channel mean and std over the spatial positions.

  `mu[n, c] = mean_{h,w} f[n, h, w, c]`,
  `sigma[n, c] = sqrt(var_{h,w} f[n, h, w, c] + eps)`, with the unbiased
  variance (divided by H*W - 1). Computed in float32 (float64 stays float64).

  Args:
    f_NHWC: feature map, shape (N, H, W, C), with H*W >= 2.
    eps: added to the variance before the square root.

  Returns:
    (mu_NC, sigma_NC), each of shape (N, C).

  Raises:
    ValueError: if `f_NHWC` is not 4-D or H*W < 2 (unbiased variance needs at
      least two positions).
  """
  checks.check_4d('feature map', f_NHWC)
  _, h, w, _ = jnp.shape(f_NHWC)
  if h * w < 2:
    raise ValueError(
        f'channel_stats needs at least 2 spatial positions (H*W >= 2) for the '
        f'unbiased variance; got H={h}, W={w} (shape {jnp.shape(f_NHWC)}). '
        'Pick an insertion point before global pooling.')
  f_NHWC = checks.as_float(f_NHWC)
  mu_NC = jnp.mean(f_NHWC, axis=(1, 2))
  centered_NHWC = f_NHWC - mu_NC[:, None, None, :]
  var_NC = jnp.sum(jnp.square(centered_NHWC), axis=(1, 2)) / (h * w - 1)
  sigma_NC = jnp.sqrt(var_NC + eps)
  return mu_NC, sigma_NC


def adain(f_t_NHWC: jax.Array,
          mu_s_NC: jax.Array,
          sigma_s_NC: jax.Array,
          eps: float = 1e-5) -> jax.Array:
  """Adaptive instance normalization of `f_t` to the statistics (mu_s, sigma_s).

  `sigma_s * (f_t - mu_t) / sigma_t + mu_s`, with
  `mu_t, sigma_t = channel_stats(f_t, eps)` broadcast over H, W. The output
  has mean exactly mu_s and std sqrt(sigma_s^2 var_t / (var_t + eps) + eps),
  i.e. sigma_s up to eps. No stop_gradient here (adain_loss applies it to f_t).

  Args:
    f_t_NHWC: teacher feature map, shape (N, H, W, C), H*W >= 2.
    mu_s_NC: target means, shape (N, C) (or (1, C), broadcast).
    sigma_s_NC: target stds, shape (N, C) (or (1, C), broadcast).
    eps: as in `channel_stats`, used for sigma_t.

  Returns:
    The re-normalized map, shape (N, H, W, C), float32 (float64 stays float64).

  Raises:
    ValueError: on bad shapes or H*W < 2.
  """
  mu_t_NC, sigma_t_NC = channel_stats(f_t_NHWC, eps)
  c = jnp.shape(f_t_NHWC)[-1]
  for name, stat in (('mu_s', mu_s_NC), ('sigma_s', sigma_s_NC)):
    if jnp.ndim(stat) != 2 or jnp.shape(stat)[-1] != c:
      raise ValueError(
          f'{name} must have shape (N, C) with C={c} (the channels of f_t, '
          f'shape {jnp.shape(f_t_NHWC)}); got shape {jnp.shape(stat)}.')
  f_t_NHWC = checks.as_float(f_t_NHWC)
  mu_s_NC = checks.as_float(mu_s_NC)
  sigma_s_NC = checks.as_float(sigma_s_NC)
  normalized_NHWC = ((f_t_NHWC - mu_t_NC[:, None, None, :])
                     / sigma_t_NC[:, None, None, :])
  return (sigma_s_NC[:, None, None, :] * normalized_NHWC
          + mu_s_NC[:, None, None, :])


def adain_loss(f_t_NHWC: jax.Array,
               f_s_NHWC: jax.Array,
               z_t_NK: jax.Array,
               tail_fn: Callable[[jax.Array], jax.Array],
               *,
               kind: str = 'mse',
               temperature: float = 4.0,
               stats: str = 'both',
               labels_N: jax.Array | None = None,
               eps: float = 1e-5) -> jax.Array:
  """AdaIN distillation loss (docs/method.md, "The AdaIN loss").

  `mu_s, sigma_s = channel_stats(f_s)`, `h = adain(stop_gradient(f_t), mu_s,
  sigma_s)`, `z = tail_fn(h)`, then
    - kind 'mse': `mean_{n,j} (z - stop_gradient(z_t))^2`;
    - kind 'kl': `tau^2 * KL(softmax(z_t / tau) || softmax(z / tau))`,
      batch mean (see `kd`);
    - kind 'ce': cross-entropy of `z` against the labels (the teacher judges
      the statistics by how well its tail still classifies, not by how far
      it moves from its own output).
  `stats` picks what is transferred: 'both' (mu_s and sigma_s), 'mean' (mu_s
  with the teacher's own sigma_t) or 'std' (sigma_s with the teacher's own
  mu_t); the ablation of whether the variance matters.
  Gradients flow through `tail_fn` into mu_s and sigma_s, hence into f_s;
  f_t and z_t get none. Freezing the tail's own parameters (and running its
  BatchNorm in inference mode) is the caller's business.

  Args:
    f_t_NHWC: teacher feature at the insertion point, shape (N, Ht, Wt, C).
    f_s_NHWC: student feature after the connector, shape (N, Hs, Ws, C); the
      spatial size may differ from the teacher's (only statistics move).
    z_t_NK: teacher logits `tail_fn(f_t)`, shape (N, K).
    tail_fn: the frozen teacher tail, (N, Ht, Wt, C) -> (N, K) logits.
    kind: 'mse' (default), 'kl' or 'ce'.
    temperature: tau for kind 'kl'.
    stats: 'both' (default), 'mean' or 'std'.
    labels_N: integer labels, shape (N,); needed by kind 'ce' only.
    eps: as in `channel_stats`.

  Returns:
    Scalar float32 loss.

  Raises:
    ValueError: for an unknown kind or stats, kind 'ce' without labels,
      mismatched channels or batch sizes, H*W < 2 on either side, or tail
      logits whose shape differs from z_t's.
  """
  if kind not in ADAIN_LOSS_KINDS:
    raise ValueError(
        f'Unknown adain_loss kind {kind!r}; valid kinds are '
        f'{", ".join(repr(k) for k in ADAIN_LOSS_KINDS)}.')
  if stats not in ADAIN_STATS:
    raise ValueError(
        f'Unknown adain_loss stats {stats!r}; valid values are '
        f'{", ".join(repr(k) for k in ADAIN_STATS)}.')
  if kind == 'ce' and labels_N is None:
    raise ValueError("adain_loss kind 'ce' needs labels_N.")
  checks.check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
  f_t_NHWC = jax.lax.stop_gradient(f_t_NHWC)
  mu_s_NC, sigma_s_NC = channel_stats(f_s_NHWC, eps)
  if stats != 'both':
    mu_t_NC, sigma_t_NC = channel_stats(f_t_NHWC, eps)
    if stats == 'mean':
      sigma_s_NC = sigma_t_NC
    else:
      mu_s_NC = mu_t_NC
  h_NHWC = adain(f_t_NHWC, mu_s_NC, sigma_s_NC, eps)
  z_NK = tail_fn(h_NHWC)
  if jnp.shape(z_NK) != jnp.shape(z_t_NK):
    raise ValueError(
        f'tail_fn returned logits of shape {jnp.shape(z_NK)}, but z_t has '
        f'shape {jnp.shape(z_t_NK)}.')
  if kind == 'kl':
    return kd(z_NK, z_t_NK, temperature)
  if kind == 'ce':
    return cross_entropy(z_NK, labels_N)
  z_t_NK = jax.lax.stop_gradient(checks.as_float(z_t_NK))
  return jnp.mean(jnp.square(checks.as_float(z_NK) - z_t_NK))


def stat_l2(f_t_NHWC: jax.Array,
            f_s_NHWC: jax.Array,
            eps: float = 1e-5) -> jax.Array:
  """Statistics-L2 ablation: squared error between channel statistics.

  `mean_{n,c} (mu_s - mu_t)^2 + mean_{n,c} (sigma_s - sigma_t)^2`, with the
  statistics of `channel_stats` and no gradient into the teacher side.

  Args:
    f_t_NHWC: teacher feature, shape (N, Ht, Wt, C), Ht*Wt >= 2.
    f_s_NHWC: student feature after the connector, shape (N, Hs, Ws, C),
      Hs*Ws >= 2; spatial sizes may differ.
    eps: as in `channel_stats`.

  Returns:
    Scalar float32 loss.

  Raises:
    ValueError: on mismatched channels or batch sizes, or H*W < 2.
  """
  checks.check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
  mu_t_NC, sigma_t_NC = channel_stats(jax.lax.stop_gradient(f_t_NHWC), eps)
  mu_s_NC, sigma_s_NC = channel_stats(f_s_NHWC, eps)
  return (jnp.mean(jnp.square(mu_s_NC - mu_t_NC))
          + jnp.mean(jnp.square(sigma_s_NC - sigma_t_NC)))


def stat_mean_l2(f_t_NHWC: jax.Array, f_s_NHWC: jax.Array) -> jax.Array:
  """Mean-only statistics L2: `mean_{n,c} (mu_s - mu_t)^2`.

  The channel means of `channel_stats` alone (the statistics term of the
  authors' released follow-up code, run beside the squared error through the
  teacher's classifier). No gradient into the teacher side.

  Args:
    f_t_NHWC: teacher feature, shape (N, Ht, Wt, C).
    f_s_NHWC: student feature after the connector, shape (N, Hs, Ws, C);
      spatial sizes may differ.

  Returns:
    Scalar float32 loss.

  Raises:
    ValueError: on mismatched channels or batch sizes.
  """
  checks.check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
  mu_t_NC = jnp.mean(checks.as_float(jax.lax.stop_gradient(f_t_NHWC)), axis=(1, 2))
  mu_s_NC = jnp.mean(checks.as_float(f_s_NHWC), axis=(1, 2))
  return jnp.mean(jnp.square(mu_s_NC - mu_t_NC))
