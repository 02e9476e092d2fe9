"""Relational losses: how examples relate, not what each feature is.

Written after RepDistiller's `distiller_zoo/` (the code of the CRD table's
numbers):
  * SP, similarity-preserving (Tung and Mori, ICCV 2019; `SP.py`): the
    batch's Gram matrices, each row L2-normalised, matched in squared error;
  * CC, correlation congruence (Peng et al., ICCV 2019; `CC.py`, the
    authors' code as RepDistiller ships it): products of neighbouring
    examples' embedding differences;
  * RKD, relational KD (Park et al., CVPR 2019; `RKD.py`): pairwise
    distances (normalised by their mean) and triplet angles, Huber-matched;
  * PKT, probabilistic knowledge transfer (Passalis and Tefas, ECCV 2018;
    `PKT.py`): a KL divergence between conditional probabilities built
    from cosine similarities.

Pure functions, as the other loss modules: arrays in, scalars out, the
teacher's side under `stop_gradient` where the reference computes it without
gradient, computed in float32 (float64 stays float64). Shape suffixes: `N`
batch, `H`/`W` spatial, `C` channels, `D` feature size.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks

NORMALIZE_EPS = 1e-12  # torch's F.normalize eps (SP, RKD).
PKT_EPS = 1e-7  # RepDistiller's PKT eps.
RKD_DISTANCE_WEIGHT = 25.0  # RepDistiller's RKDLoss w_d.
RKD_ANGLE_WEIGHT = 50.0  # RepDistiller's RKDLoss w_a.


def _flat(f: jax.Array) -> jax.Array:
  """(N, ...) -> (N, D) in the compute dtype."""
  f = checks.as_float(f)
  return jnp.reshape(f, (jnp.shape(f)[0], -1))


def _safe_norm(x: jax.Array, axis: int) -> jax.Array:
  """L2 norm along `axis`, keepdims, with a zero (not NaN) gradient at 0."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def l2_normalize(x: jax.Array, axis: int,
                 eps: float = NORMALIZE_EPS) -> jax.Array:
  """torch's `F.normalize(x, dim=axis)`: x / max(||x||, eps)."""
  return x / jnp.maximum(_safe_norm(x, axis), eps)


def _check_pair(name: str, f_s: jax.Array, f_t: jax.Array) -> None:
  if jnp.ndim(f_s) < 2 or jnp.shape(f_s)[0] != jnp.shape(f_t)[0]:
    raise ValueError(
        f'{name}: student {jnp.shape(f_s)} and teacher {jnp.shape(f_t)} '
        'features must be (N, ...) with the same batch size N.')


def sp_gram(f_ND: jax.Array) -> jax.Array:
  """SP's normalised similarity: f f^T with each row L2-normalised."""
  return l2_normalize(f_ND @ f_ND.T, axis=1)


def sp_loss(f_s: jax.Array, f_t: jax.Array) -> jax.Array:
  """SP at one pair of maps (RepDistiller `Similarity.similarity_loss`).

  `sum (G_t - G_s)^2 / N^2` with `G = normalize_rows(f f^T)`, each map
  flattened per example (any layout: a Gram matrix does not depend on the
  order of the features). Channels and sizes of the two may differ.

  Raises:
    ValueError: unless both are (N, ...) with the same N.
  """
  _check_pair('SP', f_s, f_t)
  n = jnp.shape(f_s)[0]
  g_t = jax.lax.stop_gradient(sp_gram(_flat(f_t)))
  g_s = sp_gram(_flat(f_s))
  return jnp.sum(jnp.square(g_t - g_s)) / (n * n)


def cc_loss(e_s_ND: jax.Array, e_t_ND: jax.Array) -> jax.Array:
  """CC as RepDistiller's `Correlation.forward`.

  `mean_n sum_d |e_s - e_t|_{n,d} |e_s - e_t|_{n+1,d}` over the N-1
  neighbouring pairs of the batch. Both embeddings come from heads trained
  with the student, so the gradient flows into both (no stop_gradient).

  Raises:
    ValueError: unless both are (N, D) of the same shape with N >= 2.
  """
  if (jnp.ndim(e_s_ND) != 2 or jnp.shape(e_s_ND) != jnp.shape(e_t_ND)
      or jnp.shape(e_s_ND)[0] < 2):
    raise ValueError(
        f'CC: embeddings {jnp.shape(e_s_ND)} and {jnp.shape(e_t_ND)} must '
        'be (N, D) of the same shape with N >= 2.')
  delta = jnp.abs(checks.as_float(e_s_ND) -
                  checks.as_float(e_t_ND))
  return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=1))


def rkd_pdist(e_ND: jax.Array, eps: float = NORMALIZE_EPS) -> jax.Array:
  """RepDistiller's `RKDLoss.pdist`: Euclidean distances, the squared ones
  clamped below at eps before the root, the diagonal set to 0."""
  sq = jnp.sum(jnp.square(e_ND), axis=1)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (e_ND @ e_ND.T), eps)
  return jnp.where(jnp.eye(jnp.shape(e_ND)[0], dtype=bool), 0.0,
                   jnp.sqrt(d2))


def _smooth_l1(a: jax.Array, b: jax.Array) -> jax.Array:
  """torch's `F.smooth_l1_loss` (beta 1, mean)."""
  diff = jnp.abs(a - b)
  return jnp.mean(jnp.where(diff < 1.0, 0.5 * jnp.square(diff), diff - 0.5))


def _rkd_distances(e_ND: jax.Array) -> jax.Array:
  """Pairwise distances over the mean of the positive ones."""
  d = rkd_pdist(e_ND)
  positive = d > 0
  return d / (jnp.sum(jnp.where(positive, d, 0.0)) / jnp.sum(positive))


def _rkd_angles(e_ND: jax.Array) -> jax.Array:
  """cos of the angle at i between j and k: <e_ij, e_ik>, (N, N, N)."""
  unit = l2_normalize(e_ND[None, :, :] - e_ND[:, None, :], axis=2)
  return jnp.einsum('ijd,ikd->ijk', unit, unit)


def rkd_loss(f_s: jax.Array, f_t: jax.Array,
             distance_weight: float = RKD_DISTANCE_WEIGHT,
             angle_weight: float = RKD_ANGLE_WEIGHT) -> jax.Array:
  """RKD as RepDistiller's `RKDLoss.forward`.

  `w_d smoothL1(psi_D(s), psi_D(t)) + w_a smoothL1(psi_A(s), psi_A(t))`:
  psi_D the pairwise distances over their mean (of the nonzero ones),
  psi_A the cosines of every triplet's angle; features flattened per
  example; the teacher's side without gradient.

  Raises:
    ValueError: unless both are (N, ...) with the same N.
  """
  _check_pair('RKD', f_s, f_t)
  s, t = _flat(f_s), jax.lax.stop_gradient(_flat(f_t))
  loss_d = _smooth_l1(_rkd_distances(s),
                      jax.lax.stop_gradient(_rkd_distances(t)))
  loss_a = _smooth_l1(_rkd_angles(s), jax.lax.stop_gradient(_rkd_angles(t)))
  return distance_weight * loss_d + angle_weight * loss_a


def _pkt_probabilities(f_ND: jax.Array, eps: float) -> jax.Array:
  """Cosine similarities scaled to [0, 1], each row normalised to sum 1."""
  unit = f_ND / (_safe_norm(f_ND, axis=1) + eps)
  sim = (unit @ unit.T + 1.0) / 2.0
  return sim / jnp.sum(sim, axis=1, keepdims=True)


def pkt_loss(f_s: jax.Array, f_t: jax.Array,
             eps: float = PKT_EPS) -> jax.Array:
  """PKT as RepDistiller's `PKT.cosine_similarity_loss`.

  `mean_{i,j} q_ij log((q_ij + eps) / (p_ij + eps))`, p (student) and q
  (teacher) the cosine similarities scaled to [0, 1] and normalised per row;
  features flattened per example; the teacher's side without gradient.

  Raises:
    ValueError: unless both are (N, ...) with the same N.
  """
  _check_pair('PKT', f_s, f_t)
  p = _pkt_probabilities(_flat(f_s), eps)
  q = jax.lax.stop_gradient(_pkt_probabilities(_flat(f_t), eps))
  return jnp.mean(q * jnp.log((q + eps) / (p + eps)))
