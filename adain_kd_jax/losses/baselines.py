"""Losses of the published baselines: FitNet, attention transfer, decoupled KD.

Each written after the benchmark code that produced the published numbers
(RepDistiller for FitNet and AT, mdistiller for DKD); recipes and the
conventions of those numbers: docs/method.md, section "Baselines". Pure
functions, as in `adain_family.py`: arrays in, scalars out, teacher-side inputs
under `stop_gradient`, computed in float32 (float64 stays float64). Hinton KD
is in `adain_family.py` (adain_kd uses it too); CRD, which carries a memory bank
and embedding heads, is `crd.py`. Shape suffixes: `N` batch, `H`/`W`
spatial, `C` channels, `K` classes.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import adain_family
from adain_kd_jax.losses import checks
# ------------------------------------------------------------------ FitNet


def feature_mse(f_t_NHWC: jax.Array, f_s_NHWC: jax.Array) -> jax.Array:
  """Feature matching: mean squared error between f_s (resized) and f_t.

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
  checks.check_same_channels_and_batch(f_t_NHWC, f_s_NHWC)
  f_t_NHWC = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  f_s_NHWC = checks.as_float(f_s_NHWC)
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
  f_t_NHWC = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  return jnp.mean(jnp.square(checks.as_float(f_s_NHWC) - f_t_NHWC))


# ---------------------------------------------------- Attention transfer


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
  checks.check_4d('feature map', f_NHWC)
  f_NHWC = checks.as_float(f_NHWC)
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
  checks.check_4d('f_t', f_t_NHWC)
  checks.check_4d('f_s', f_s_NHWC)
  n_t, h_t, w_t, _ = jnp.shape(f_t_NHWC)
  n_s, h_s, w_s, _ = jnp.shape(f_s_NHWC)
  if n_t != n_s:
    raise ValueError(
        f'Batch mismatch: f_t has batch size {n_t}, f_s has {n_s} (shapes '
        f'{jnp.shape(f_t_NHWC)} and {jnp.shape(f_s_NHWC)}).')
  f_t_NHWC = jax.lax.stop_gradient(checks.as_float(f_t_NHWC))
  f_s_NHWC = checks.as_float(f_s_NHWC)
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


# ------------------------------------------------------- Decoupled KD


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
  z_s_NK = checks.as_float(student_logits_NK)
  z_t_NK = jax.lax.stop_gradient(checks.as_float(teacher_logits_NK))
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
  epoch = checks.as_float(epoch)
  return jnp.minimum(epoch / warmup_epochs, 1.0)
