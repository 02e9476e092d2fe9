"""Losses for knowledge distillation via adaptive instance normalization.

Pure functions: arrays in, scalars (or statistics) out. See METHOD.md, sections
2-4. Shape suffixes: `N` batch, `H`/`W` spatial, `C` channels, `K` classes.

The teacher is frozen (METHOD.md 3.4): every teacher-side input (`f_t`,
`z_t`, teacher logits) is wrapped in `jax.lax.stop_gradient` here, so that a
caller that forgets to freeze them still gets the right student gradients.
Statistics and losses are computed in float32 (float64 stays float64), also
for bfloat16 / float16 inputs.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

# How the tail's output on the AdaIN map is judged (adain_loss `kind`).
ADAIN_LOSS_KINDS = ('mse', 'kl', 'ce')
# Which student statistics AdaIN puts into the teacher's map (`stats`); the
# others stay the teacher's own.
ADAIN_STATS = ('both', 'mean', 'std')


def _compute_dtype(dtype) -> jnp.dtype:
  """Returns float32, or float64 where `dtype` already is float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _as_float(x: jax.Array) -> jax.Array:
  """Casts `x` to its compute dtype (at least float32)."""
  x = jnp.asarray(x)
  return x.astype(_compute_dtype(x.dtype))


def _check_4d(name: str, f: jax.Array) -> None:
  """Raises ValueError unless `f` is a 4-D (N, H, W, C) feature map."""
  if jnp.ndim(f) != 4:
    raise ValueError(
        f'{name} must be a 4-D feature map of shape (N, H, W, C); '
        f'got shape {jnp.shape(f)}.')


def _check_same_channels_and_batch(f_t_NHWC: jax.Array,
                                   f_s_NHWC: jax.Array) -> None:
  """Raises ValueError unless teacher and student maps pair up.

  Args:
    f_t_NHWC: teacher feature map, shape (N, Ht, Wt, C).
    f_s_NHWC: student feature map, shape (N, Hs, Ws, C).
  """
  _check_4d('f_t', f_t_NHWC)
  _check_4d('f_s', f_s_NHWC)
  n_t, _, _, c_t = jnp.shape(f_t_NHWC)
  n_s, _, _, c_s = jnp.shape(f_s_NHWC)
  if c_t != c_s:
    raise ValueError(
        f'Channel mismatch: teacher feature f_t has {c_t} channels, student '
        f'feature f_s has {c_s} (shapes {jnp.shape(f_t_NHWC)} and '
        f'{jnp.shape(f_s_NHWC)}). Pass the student feature through the '
        'connector (1x1 conv to the teacher channel count) first.')
  if n_t != n_s:
    raise ValueError(
        f'Batch mismatch: f_t has batch size {n_t}, f_s has {n_s} (shapes '
        f'{jnp.shape(f_t_NHWC)} and {jnp.shape(f_s_NHWC)}).')


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
      _as_float(logits_NK), labels_N)
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
  z_s_NK = _as_float(student_logits_NK)
  z_t_NK = jax.lax.stop_gradient(_as_float(teacher_logits_NK))
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
  _check_4d('feature map', f_NHWC)
  _, h, w, _ = jnp.shape(f_NHWC)
  if h * w < 2:
    raise ValueError(
        f'channel_stats needs at least 2 spatial positions (H*W >= 2) for the '
        f'unbiased variance; got H={h}, W={w} (shape {jnp.shape(f_NHWC)}). '
        'Pick an insertion point before global pooling.')
  f_NHWC = _as_float(f_NHWC)
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
  f_t_NHWC = _as_float(f_t_NHWC)
  mu_s_NC = _as_float(mu_s_NC)
  sigma_s_NC = _as_float(sigma_s_NC)
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
  """AdaIN distillation loss (docs/method.md).

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
  _check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
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
  z_t_NK = jax.lax.stop_gradient(_as_float(z_t_NK))
  return jnp.mean(jnp.square(_as_float(z_NK) - z_t_NK))


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
  _check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
  mu_t_NC, sigma_t_NC = channel_stats(jax.lax.stop_gradient(f_t_NHWC), eps)
  mu_s_NC, sigma_s_NC = channel_stats(f_s_NHWC, eps)
  return (jnp.mean(jnp.square(mu_s_NC - mu_t_NC))
          + jnp.mean(jnp.square(sigma_s_NC - sigma_t_NC)))


def fitnet(f_t_NHWC: jax.Array, f_s_NHWC: jax.Array) -> jax.Array:
  """FitNet-style hint loss: mean squared error between f_s and f_t.

  The `fm` term of the adain methods (after their 1x1 connector); the
  `fitnet` method itself uses `hint_mse` after its hint regressor.
  When the spatial sizes differ, f_s is first resized to the teacher's (Ht,
  Wt) with `jax.image.resize(..., method='bilinear')` (half-pixel centres,
  jax's default antialiasing when downsampling). No gradient into f_t.

  Args:
    f_t_NHWC: teacher feature, shape (N, Ht, Wt, C).
    f_s_NHWC: student feature after the connector, shape (N, Hs, Ws, C).

  Returns:
    Scalar float32 loss, the mean over (N, Ht, Wt, C).

  Raises:
    ValueError: on mismatched channels or batch sizes.
  """
  _check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
  f_t_NHWC = jax.lax.stop_gradient(_as_float(f_t_NHWC))
  f_s_NHWC = _as_float(f_s_NHWC)
  if jnp.shape(f_s_NHWC)[1:3] != jnp.shape(f_t_NHWC)[1:3]:
    f_s_NHWC = jax.image.resize(
        f_s_NHWC, jnp.shape(f_t_NHWC), method='bilinear')
  return jnp.mean(jnp.square(f_s_NHWC - f_t_NHWC))


def hint_mse(f_t_NHWC: jax.Array, f_s_NHWC: jax.Array) -> jax.Array:
  """The FitNet method's hint loss: plain mean squared error, no resizing.

  As the CRD benchmark's `HintLoss` (`nn.MSELoss()` between the hint
  regressor's output and the teacher feature, RepDistiller
  `distiller_zoo/FitNet.py`). The regressor (`connectors.HintRegressor`)
  already matches the teacher's channels and spatial size. No gradient into
  f_t.

  Args:
    f_t_NHWC: teacher feature, shape (N, H, W, C).
    f_s_NHWC: hint regressor output, the same shape.

  Returns:
    Scalar float32 loss, the mean over (N, H, W, C).

  Raises:
    ValueError: unless the two shapes are equal.
  """
  if jnp.shape(f_t_NHWC) != jnp.shape(f_s_NHWC):
    raise ValueError(
        f'FitNet hint: the regressor output has shape {jnp.shape(f_s_NHWC)}, '
        f'the teacher feature {jnp.shape(f_t_NHWC)}; they must be equal '
        '(the hint regressor maps the student feature to the teacher\'s '
        'shape).')
  f_t_NHWC = jax.lax.stop_gradient(_as_float(f_t_NHWC))
  return jnp.mean(jnp.square(_as_float(f_s_NHWC) - f_t_NHWC))


# ------------------------------------------------------------------------
# Baselines: attention transfer (AT), decoupled KD (DKD), contrastive
# representation distillation (CRD).


def _l2_normalize(x_ND: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`x / max(||x||_2, eps)` per row, as torch.nn.functional.normalize."""
  # max(sqrt(s), eps) == sqrt(max(s, eps^2)); the latter has a finite
  # gradient for an all-zero row (torch's norm backward is 0 there too).
  sq_N1 = jnp.sum(jnp.square(x_ND), axis=-1, keepdims=True)
  return x_ND / jnp.sqrt(jnp.maximum(sq_N1, eps**2))


def _adaptive_avg_pool(f_NHWC: jax.Array, h: int, w: int) -> jax.Array:
  """Adaptive average pooling of (N, H, W, C) to (N, h, w, C), H % h == 0.

  With divisible sizes this is exactly torch's `adaptive_avg_pool2d`: the mean
  over non-overlapping (H // h, W // w) windows. The caller checks
  divisibility.
  """
  n, big_h, big_w, c = jnp.shape(f_NHWC)
  if (big_h, big_w) == (h, w):
    return f_NHWC
  windows = jnp.reshape(f_NHWC, (n, h, big_h // h, w, big_w // w, c))
  return jnp.mean(windows, axis=(2, 4))


def attention_map(f_NHWC: jax.Array, p: float = 2) -> jax.Array:
  """Spatial attention map of attention transfer (Zagoruyko & Komodakis).

  `a = normalize(mean_c |f|^p)`, flattened to H*W positions and L2-normalised
  per sample with `torch.nn.functional.normalize` semantics
  (`a / max(||a||_2, 1e-12)`), as RepDistiller's `Attention.at`. RepDistiller
  writes `f.pow(p)`; for the published p = 2 (and any even p) that equals
  `|f|^p`.

  Args:
    f_NHWC: feature map, shape (N, H, W, C).
    p: the exponent (2 in the paper and in RepDistiller).

  Returns:
    The attention maps, shape (N, H*W), float32 (float64 stays float64).

  Raises:
    ValueError: if `f_NHWC` is not 4-D.
  """
  _check_4d('feature map', f_NHWC)
  f_NHWC = _as_float(f_NHWC)
  n, h, w, _ = jnp.shape(f_NHWC)
  a_NHW = jnp.mean(jnp.abs(f_NHWC)**p, axis=-1)
  return _l2_normalize(jnp.reshape(a_NHW, (n, h * w)))


def at(f_t_NHWC: jax.Array, f_s_NHWC: jax.Array, p: float = 2) -> jax.Array:
  """Attention-transfer loss for one feature pair (RepDistiller `at_loss`).

  `mean_{n, position} (attention_map(f_s) - attention_map(f_t))^2`, i.e.
  RepDistiller's `(at(f_s) - at(f_t)).pow(2).mean()`, with no gradient into
  f_t. Channel counts may differ (the maps average over channels), so no
  connector is needed. RepDistiller sums this over several feature pairs and
  weights the sum by beta = 1000; the sum and the weight are the caller's job.

  Spatial sizes: as in RepDistiller, the larger feature map is first reduced
  to the smaller one's (H, W) with adaptive average pooling (applied to the
  features, before the attention map): the student's when it is larger, the
  teacher's when it is larger. Only exact (divisible) reductions are
  supported, where adaptive pooling is a plain window mean.

  Args:
    f_t_NHWC: teacher feature, shape (N, Ht, Wt, Ct) (stop_gradient).
    f_s_NHWC: student feature, shape (N, Hs, Ws, Cs).
    p: the attention exponent (2 as published).

  Returns:
    Scalar float32 loss.

  Raises:
    ValueError: on non-4-D maps, mismatched batch sizes, or spatial sizes
      where neither map can be pooled exactly to the other's (one larger in H
      and smaller in W, or a size that does not divide).
  """
  _check_4d('f_t', f_t_NHWC)
  _check_4d('f_s', f_s_NHWC)
  n_t, h_t, w_t, _ = jnp.shape(f_t_NHWC)
  n_s, h_s, w_s, _ = jnp.shape(f_s_NHWC)
  if n_t != n_s:
    raise ValueError(
        f'Batch mismatch: f_t has batch size {n_t}, f_s has {n_s} (shapes '
        f'{jnp.shape(f_t_NHWC)} and {jnp.shape(f_s_NHWC)}).')
  f_t_NHWC = jax.lax.stop_gradient(_as_float(f_t_NHWC))
  f_s_NHWC = _as_float(f_s_NHWC)
  if (h_s, w_s) != (h_t, w_t):
    if h_s >= h_t and w_s >= w_t and h_s % h_t == 0 and w_s % w_t == 0:
      f_s_NHWC = _adaptive_avg_pool(f_s_NHWC, h_t, w_t)
    elif h_t >= h_s and w_t >= w_s and h_t % h_s == 0 and w_t % w_s == 0:
      f_t_NHWC = _adaptive_avg_pool(f_t_NHWC, h_s, w_s)
    else:
      raise ValueError(
          f'at: spatial sizes {(h_s, w_s)} (student) and {(h_t, w_t)} '
          '(teacher) differ and neither divides the other in both H and W; '
          'only exact adaptive-average-pooling reductions are supported. '
          f'Shapes: f_t {jnp.shape(f_t_NHWC)}, f_s {jnp.shape(f_s_NHWC)}.')
  a_t_NP = attention_map(f_t_NHWC, p)
  a_s_NP = attention_map(f_s_NHWC, p)
  return jnp.mean(jnp.square(a_s_NP - a_t_NP))


def _check_logits_and_labels(student_logits_NK: jax.Array,
                             teacher_logits_NK: jax.Array,
                             labels_N: jax.Array) -> None:
  """Raises ValueError unless logits are equal-shape (N, K), labels (N,)."""
  if jnp.ndim(student_logits_NK) != 2:
    raise ValueError(
        f'student logits must have shape (N, K); got '
        f'{jnp.shape(student_logits_NK)}.')
  if jnp.shape(student_logits_NK) != jnp.shape(teacher_logits_NK):
    raise ValueError(
        f'Student logits {jnp.shape(student_logits_NK)} and teacher logits '
        f'{jnp.shape(teacher_logits_NK)} must have the same shape (N, K).')
  if jnp.shape(labels_N) != jnp.shape(student_logits_NK)[:1]:
    raise ValueError(
        f'labels must have shape (N,) = {jnp.shape(student_logits_NK)[:1]}; '
        f'got {jnp.shape(labels_N)}.')


def _kl_div_sum(log_q_NK: jax.Array, p_NK: jax.Array) -> jax.Array:
  """torch `F.kl_div(log_q, p, reduction='sum')` per row: shape (N,).

  `sum_k xlogy(p, p) - p log_q`, so entries with p = 0 contribute 0.
  """
  return jnp.sum(jax.scipy.special.xlogy(p_NK, p_NK) - p_NK * log_q_NK,
                 axis=-1)


def dkd_terms(student_logits_NK: jax.Array,
              teacher_logits_NK: jax.Array,
              labels_N: jax.Array,
              temperature: float = 4.0) -> tuple[jax.Array, jax.Array]:
  """Per-example TCKD and NCKD of decoupled KD, each times temperature^2.

  Exactly mdistiller's `dkd_loss` before the batch mean (Zhao et al., CVPR
  2022, `mdistiller/distillers/DKD.py`), with p = softmax(z / T):
    - TCKD: KL(b_t || b_s) of the binary distributions
      b = [sum(p * gt_mask), sum(p * other_mask)] (`cat_mask`), with
      log b_s = log(b_s) (not a log-softmax, as mdistiller);
    - NCKD: KL(softmax(z_t / T - 1000 gt_mask) ||
      softmax(z_s / T - 1000 gt_mask)), i.e. the distributions over the
      non-target classes, with the target logit pushed down by 1000;
  each as torch `F.kl_div(..., size_average=False)` (target entries that are
  0 contribute 0) times T^2. The paper's decomposition holds per example:
  `KL(p_t || p_s) T^2 = TCKD + (1 - p_t[label]) NCKD` (p at temperature T).
  The teacher logits get no gradient.

  Args:
    student_logits_NK: student logits, shape (N, K).
    teacher_logits_NK: teacher logits, shape (N, K) (stop_gradient).
    labels_N: integer target classes in [0, K), shape (N,).
    temperature: the temperature T (mdistiller CIFAR-100 default 4).

  Returns:
    (tckd_N, nckd_N), each of shape (N,), float32.

  Raises:
    ValueError: on mismatched shapes.
  """
  _check_logits_and_labels(student_logits_NK, teacher_logits_NK, labels_N)
  z_s_NK = _as_float(student_logits_NK)
  z_t_NK = jax.lax.stop_gradient(_as_float(teacher_logits_NK))
  k = jnp.shape(z_s_NK)[-1]
  gt_mask_NK = jax.nn.one_hot(labels_N, k, dtype=z_s_NK.dtype)
  other_mask_NK = 1. - gt_mask_NK

  def cat_mask(p_NK):
    return jnp.stack([jnp.sum(p_NK * gt_mask_NK, axis=-1),
                      jnp.sum(p_NK * other_mask_NK, axis=-1)], axis=-1)

  b_s_N2 = cat_mask(jax.nn.softmax(z_s_NK / temperature, axis=-1))
  b_t_N2 = cat_mask(jax.nn.softmax(z_t_NK / temperature, axis=-1))
  tckd_N = _kl_div_sum(jnp.log(b_s_N2), b_t_N2) * temperature**2
  p_t_part2_NK = jax.nn.softmax(
      z_t_NK / temperature - 1000. * gt_mask_NK, axis=-1)
  log_p_s_part2_NK = jax.nn.log_softmax(
      z_s_NK / temperature - 1000. * gt_mask_NK, axis=-1)
  nckd_N = _kl_div_sum(log_p_s_part2_NK, p_t_part2_NK) * temperature**2
  return tckd_N, nckd_N


def dkd(student_logits_NK: jax.Array,
        teacher_logits_NK: jax.Array,
        labels_N: jax.Array,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0) -> jax.Array:
  """Decoupled KD loss (Zhao et al., CVPR 2022), as mdistiller's `dkd_loss`.

  `alpha * TCKD + beta * NCKD`, each summed over classes, times T^2 and
  divided by the batch size (see `dkd_terms`). Defaults are mdistiller's
  CIFAR-100 ones (alpha 1, beta 8, T 4; beta differs per teacher there). The
  training loss multiplies this by `dkd_warmup_factor(epoch)` and adds the
  cross-entropy (CE weight 1). The teacher logits get no gradient.

  Args:
    student_logits_NK: student logits, shape (N, K).
    teacher_logits_NK: teacher logits, shape (N, K) (stop_gradient).
    labels_N: integer target classes in [0, K), shape (N,).
    alpha: TCKD weight.
    beta: NCKD weight.
    temperature: the temperature T.

  Returns:
    Scalar float32 loss.

  Raises:
    ValueError: on mismatched shapes.
  """
  tckd_N, nckd_N = dkd_terms(student_logits_NK, teacher_logits_NK, labels_N,
                             temperature)
  return alpha * jnp.mean(tckd_N) + beta * jnp.mean(nckd_N)


def dkd_warmup_factor(epoch, warmup_epochs: float = 20) -> jax.Array:
  """DKD's linear warm-up weight `min(epoch / warmup_epochs, 1.0)`.

  mdistiller counts epochs from 1, so its first epoch gets 1 / 20. Works on
  Python numbers and (traced) arrays.

  Args:
    epoch: the current epoch (mdistiller: 1-based), scalar.
    warmup_epochs: warm-up length (mdistiller default 20), > 0.

  Returns:
    Scalar float32 factor in [0, 1] for epoch >= 0.
  """
  epoch = _as_float(epoch)
  return jnp.minimum(epoch / warmup_epochs, 1.0)


CRD_EPS = 1e-7  # RepDistiller crd/criterion.py `eps`.


def crd_embed_normalize(x_ND: jax.Array) -> jax.Array:
  """L2 normalisation of CRD's `Embed` head (RepDistiller `Normalize(2)`).

  `x / sqrt(sum_d x^2)` per row, exactly as the original (no epsilon: an
  all-zero row gives NaN there too). The linear embedding before it (to 128
  dimensions as published) lives in the model code.

  Args:
    x_ND: embeddings, shape (N, D).

  Returns:
    Unit-norm rows, shape (N, D), float32 (float64 stays float64).
  """
  if jnp.ndim(x_ND) != 2:
    raise ValueError(f'x must have shape (N, D); got {jnp.shape(x_ND)}.')
  x_ND = _as_float(x_ND)
  return x_ND / jnp.sqrt(jnp.sum(jnp.square(x_ND), axis=-1, keepdims=True))


def crd_memory_init(rng: jax.Array, num_data: int, dim: int
                   ) -> dict[str, jax.Array]:
  """Initial CRD memory bank (RepDistiller `ContrastMemory.__init__`).

  Both banks are uniform in [-stdv, stdv) with stdv = 1 / sqrt(dim / 3)
  (independent draws). The normalisation constants Z start unset (-1, as the
  original's params buffer); `crd_loss` sets each from the first batch it
  sees and keeps it fixed afterwards. Published: dim = 128 (feat_dim),
  num_data = the training-set size.

  Args:
    rng: a jax PRNG key.
    num_data: number of training examples (memory rows).
    dim: embedding dimension.

  Returns:
    dict(memory_s=(num_data, dim) float32 bank of student embeddings
    (`memory_v1`), memory_t=(num_data, dim) bank of teacher embeddings
    (`memory_v2`), z_s=scalar Z of the student-anchored scores (`Z_v1`),
    z_t=scalar Z of the teacher-anchored scores (`Z_v2`)); Z <= 0 = not set.
  """
  if num_data < 1 or dim < 1:
    raise ValueError(
        f'num_data and dim must be positive; got {num_data} and {dim}.')
  stdv = 1. / (dim / 3.)**0.5
  rng_s, rng_t = jax.random.split(rng)
  shape = (num_data, dim)
  return {
      'memory_s': jax.random.uniform(rng_s, shape, jnp.float32, -stdv, stdv),
      'memory_t': jax.random.uniform(rng_t, shape, jnp.float32, -stdv, stdv),
      'z_s': jnp.array(-1., jnp.float32),
      'z_t': jnp.array(-1., jnp.float32),
  }


def _contrast_loss(x_NK1: jax.Array, num_data: int) -> jax.Array:
  """RepDistiller `ContrastLoss` (Eq. 18): NCE loss, scalar.

  Args:
    x_NK1: normalised scores, column 0 the positive, shape (N, K+1).
    num_data: dataset size; the noise distribution is Pn = 1 / num_data.
  """
  n, k1 = jnp.shape(x_NK1)
  m_pn = (k1 - 1) * (1. / num_data)
  p_pos_N = x_NK1[:, 0]
  p_neg_NK = x_NK1[:, 1:]
  log_d1_N = jnp.log(p_pos_N / (p_pos_N + (m_pn + CRD_EPS)))
  log_d0_NK = jnp.log(m_pn / (p_neg_NK + (m_pn + CRD_EPS)))
  return -(jnp.sum(log_d1_N) + jnp.sum(log_d0_NK)) / n


def crd_loss(emb_s_ND: jax.Array,
             emb_t_ND: jax.Array,
             idx_N: jax.Array,
             contrast_idx_NK1: jax.Array,
             memory: dict[str, jax.Array],
             *,
             temperature: float = 0.07,
             momentum: float = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CRD loss and memory update (Tian et al., ICLR 2020; RepDistiller crd/).

  `ContrastMemory.forward` followed by the two `ContrastLoss`es of
  `CRDLoss`, as a pure function of an explicit memory state:
    - out_s = exp(memory_t[contrast_idx] @ emb_s / T) / z_s  (student
      anchored, contrasted against the teacher memory; `out_v1`),
    - out_t = exp(memory_s[contrast_idx] @ emb_t / T) / z_t  (`out_v2`),
    where an unset Z (<= 0) is set to `mean(out) * num_data` from this batch
    (then fixed: returned in the new state, no gradient through it);
    - loss = ContrastLoss(out_s) + ContrastLoss(out_t), ContrastLoss(x) =
      -(sum_n log(x_pos / (x_pos + K Pn + eps)) + sum_{n,k} log(K Pn /
      (x_neg + K Pn + eps))) / N, with Pn = 1 / num_data, eps = 1e-7;
    - memory update (no gradient): rows idx of memory_s become
      normalize(memory_s[idx] * momentum + emb_s * (1 - momentum)), likewise
      memory_t with emb_t. The scores use the memory before the update.
  Gradients reach emb_s and emb_t through the scores only (both embedding
  heads are trained in CRD, so emb_t is NOT stop-gradient'ed; the teacher
  backbone feature fed to its head should be). Memory rows carry none.
  Repeated entries of idx_N update the same row: which one wins is
  unspecified (as torch's index_copy_). Published: T = 0.07, K = 16384
  negatives, 128-d embeddings, momentum 0.5 (loss weight 0.8 in RepDistiller).

  Args:
    emb_s_ND: L2-normalised student embeddings (`crd_embed_normalize`),
      shape (N, D).
    emb_t_ND: L2-normalised teacher embeddings, shape (N, D).
    idx_N: dataset indices of the batch examples, shape (N,).
    contrast_idx_NK1: memory rows to score, shape (N, K+1), column 0 = idx
      (the positive), the rest negatives (`crd_sample_contrast`).
    memory: state from `crd_memory_init` / a previous `crd_loss`.
    temperature: T.
    momentum: memory momentum.

  Returns:
    (loss, new_memory): scalar float32 loss and the updated state (same
    structure, shapes and dtypes as `memory`).

  Raises:
    ValueError: on inconsistent shapes or a memory dict with missing keys.
  """
  missing = {'memory_s', 'memory_t', 'z_s', 'z_t'} - set(memory)
  if missing:
    raise ValueError(f'memory is missing keys {sorted(missing)}; build it '
                     'with crd_memory_init.')
  mem_s = jnp.asarray(memory['memory_s'])
  mem_t = jnp.asarray(memory['memory_t'])
  if jnp.ndim(mem_s) != 2 or jnp.shape(mem_s) != jnp.shape(mem_t):
    raise ValueError(
        f'memory_s and memory_t must both have shape (num_data, D); got '
        f'{jnp.shape(mem_s)} and {jnp.shape(mem_t)}.')
  num_data, d = jnp.shape(mem_s)
  for name, e in (('emb_s', emb_s_ND), ('emb_t', emb_t_ND)):
    if jnp.ndim(e) != 2 or jnp.shape(e)[1] != d:
      raise ValueError(
          f'{name} must have shape (N, D) with D={d} (the memory dim); got '
          f'{jnp.shape(e)}.')
  n = jnp.shape(emb_s_ND)[0]
  if jnp.shape(emb_t_ND)[0] != n or jnp.shape(idx_N) != (n,):
    raise ValueError(
        f'Batch mismatch: emb_s {jnp.shape(emb_s_ND)}, emb_t '
        f'{jnp.shape(emb_t_ND)}, idx {jnp.shape(idx_N)} (want (N,)).')
  if (jnp.ndim(contrast_idx_NK1) != 2 or jnp.shape(contrast_idx_NK1)[0] != n
      or jnp.shape(contrast_idx_NK1)[1] < 2):
    raise ValueError(
        f'contrast_idx must have shape (N, K+1) with N={n} and K >= 1; got '
        f'{jnp.shape(contrast_idx_NK1)}.')

  emb_s_ND = _as_float(emb_s_ND)
  emb_t_ND = _as_float(emb_t_ND)
  dtype = emb_s_ND.dtype
  mem_s_c = jax.lax.stop_gradient(mem_s).astype(dtype)
  mem_t_c = jax.lax.stop_gradient(mem_t).astype(dtype)

  def scores(mem_MD, emb_ND, z):
    weight_NK1D = mem_MD[contrast_idx_NK1]
    out_NK1 = jnp.exp(jnp.einsum('nkd,nd->nk', weight_NK1D, emb_ND)
                      / temperature)
    z = jax.lax.stop_gradient(jnp.asarray(z, dtype))
    z_new = jnp.where(
        z > 0, z, jax.lax.stop_gradient(jnp.mean(out_NK1) * num_data))
    return out_NK1 / z_new, z_new

  out_s_NK1, z_s = scores(mem_t_c, emb_s_ND, memory['z_s'])
  out_t_NK1, z_t = scores(mem_s_c, emb_t_ND, memory['z_t'])
  loss = (_contrast_loss(out_s_NK1, num_data)
          + _contrast_loss(out_t_NK1, num_data))

  def update(mem_MD, mem_c_MD, emb_ND):
    pos_ND = (mem_c_MD[idx_N] * momentum
              + jax.lax.stop_gradient(emb_ND) * (1. - momentum))
    pos_ND = pos_ND / jnp.sqrt(jnp.sum(jnp.square(pos_ND), -1, keepdims=True))
    return jax.lax.stop_gradient(
        mem_MD.at[idx_N].set(pos_ND.astype(mem_MD.dtype)))

  new_memory = dict(memory)
  new_memory.update(
      memory_s=update(mem_s, mem_s_c, emb_s_ND),
      memory_t=update(mem_t, mem_t_c, emb_t_ND),
      z_s=z_s.astype(jnp.asarray(memory['z_s']).dtype),
      z_t=z_t.astype(jnp.asarray(memory['z_t']).dtype))
  return loss, new_memory


def crd_sample_contrast(rng: jax.Array,
                        idx_N: jax.Array,
                        labels_N: jax.Array | None,
                        num_data: int,
                        num_negatives: int,
                        *,
                        data_labels_M: jax.Array | None = None) -> jax.Array:
  """Contrast indices for `crd_loss`: column 0 = idx, then K negatives.

  Two modes:
    - uniform (default, `data_labels_M` None; `labels_N` is then ignored and
      may be None): negatives i.i.d. uniform over [0, num_data), with
      replacement, possibly hitting idx itself or its class. This is
      `ContrastMemory`'s own fallback (AliasMethod over uniform unigrams).
    - class-aware, RepDistiller's default 'exact' mode
      (`CIFAR100InstanceSample`), when `data_labels_M` (the label of every
      training example, shape (num_data,)) and `labels_N` are given:
      negatives drawn uniformly WITHOUT replacement among the examples whose
      label differs from labels_N[n] (random keys, same-class examples
      masked, top-K). Needs K <= the number of other-class examples (the
      original falls back to sampling with replacement otherwise; here it is
      a ValueError when the labels are concrete). Costs O(N num_data) per
      call.
  Published K = 16384 (RepDistiller nce_k).

  Args:
    rng: a jax PRNG key.
    idx_N: dataset indices of the batch, shape (N,).
    labels_N: labels of the batch, shape (N,), or None (uniform mode).
    num_data: dataset size (static).
    num_negatives: K (static).
    data_labels_M: labels of all examples, shape (num_data,), or None.

  Returns:
    int32 indices, shape (N, K+1).

  Raises:
    ValueError: on bad shapes, or too few other-class examples.
  """
  if jnp.ndim(idx_N) != 1:
    raise ValueError(f'idx must have shape (N,); got {jnp.shape(idx_N)}.')
  if num_negatives < 1 or num_data < 1:
    raise ValueError(
        f'num_negatives and num_data must be positive; got {num_negatives} '
        f'and {num_data}.')
  n = jnp.shape(idx_N)[0]
  idx_N = jnp.asarray(idx_N).astype(jnp.int32)
  if data_labels_M is None:
    neg_NK = jax.random.randint(rng, (n, num_negatives), 0, num_data,
                                dtype=jnp.int32)
  else:
    if labels_N is None or jnp.shape(labels_N) != (n,):
      raise ValueError(
          f'Class-aware sampling needs labels of shape (N,) = ({n},); got '
          f'{None if labels_N is None else jnp.shape(labels_N)}.')
    if jnp.shape(data_labels_M) != (num_data,):
      raise ValueError(
          f'data_labels must have shape (num_data,) = ({num_data},); got '
          f'{jnp.shape(data_labels_M)}.')
    if num_negatives > num_data:
      raise ValueError(
          f'num_negatives={num_negatives} exceeds num_data={num_data}.')
    same_NM = (jnp.asarray(labels_N)[:, None]
               == jnp.asarray(data_labels_M)[None, :])
    if not isinstance(same_NM, jax.core.Tracer):
      available = num_data - int(jnp.max(jnp.sum(same_NM, axis=-1)))
      if num_negatives > available:
        raise ValueError(
            f'num_negatives={num_negatives} exceeds the {available} '
            'other-class examples available to some batch example.')
    keys_NM = jax.random.uniform(rng, (n, num_data))
    keys_NM = jnp.where(same_NM, -1., keys_NM)
    _, neg_NK = jax.lax.top_k(keys_NM, num_negatives)
    neg_NK = neg_NK.astype(jnp.int32)
  return jnp.concatenate([idx_N[:, None], neg_NK], axis=1)
