"""KDSVD's loss: self-supervised KD with singular value decomposition (Lee et
al., ECCV 2018).

Written after RepDistiller's `distiller_zoo/KDSVD.py` (the `KDSVD` module and
its `svd` and `align_rsv`), applied to every stage output as RepDistiller's
`feat[1:-1]`. Each example's map at stage i is a (H*W, C) matrix; its right
singular vectors (C-dimensional, one per singular value, largest first) are
taken: the teacher's first k, the student's first k + 3. Each teacher vector
picks, among the student's, the one of largest |cosine| and takes it with
that cosine's sign (`align_rsv`); both are scaled by the teacher's first k
singular values, L2-normalised over those k. Between consecutive stages
i - 1 and i, each network's relation is the Gaussian kernel
`exp(-(v_i[c] - v_{i-1}[c'])^2 / 8)` over every channel pair (c, c'); the
loss adds up the squared differences of the two relations over every pair,
channel and vector (a non-finite entry counted as 0), divided by the batch
size, summed over the S - 1 consecutive pairs:

  L = sum_{i=2..S} sum_{n, c, c', j} (R^s_i - R^t_i)^2 / N.

Student and teacher must have the same channel count at every stage (the
cosines pair their vectors). The teacher's vectors have their sign fixed
(the reference's is LAPACK's arbitrary one, see `_sign_fixed`). As in the
reference, the gradient of a singular vector is undefined where one of the
first k + 3 singular values repeats. Pure, float32 (float64 stays
float64), the teacher's side without gradient.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks
from adain_kd_jax.losses import relational

KDSVD_K = 1  # RepDistiller's and mdistiller's KDSVD k.
# The student keeps k + 3 vectors (RepDistiller's svd(f_s, k + 3)).
KDSVD_EXTRA = 3
KDSVD_RBF_SCALE = 8.0  # The Gaussian kernel's exp(-d^2 / 8).


def _finite(x: jax.Array) -> jax.Array:
  """RepDistiller's `removenan`: non-finite entries set to 0."""
  return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def _eigh(m_NDD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`jnp.linalg.eigh` of each matrix; on a CPU one matrix per LAPACK call.

  jaxlib's CPU eigh splits a large enough batch into chunks scheduled on
  XLA's intra-op thread pool and blocks its own pool thread until they are
  done. When as many eighs run at once as the pool has threads (the
  student's and the teacher's at one stage, or one per simulated device),
  every thread waits for chunks that no thread is free to run: the jitted
  training step hung, idle, on a 2-core CPU. A batch of one runs on the
  calling thread, so `lax.map` over the examples cannot deadlock; other
  platforms keep the batched call.
  """
  return jax.lax.platform_dependent(
      m_NDD, cpu=lambda m: jax.lax.map(jnp.linalg.eigh, m),
      default=jnp.linalg.eigh)


def kdsvd_singular(f_NHWC: jax.Array,
                   n: int) -> tuple[jax.Array, jax.Array]:
  """(v_NCn, s_Nn): the first n right singular vectors of each example's
  (H*W, C) matrix and its first n singular values, each L2-normalised
  (vectors over C, values over the n), as RepDistiller's `svd(feat, n)`.

  Computed from the eigenvectors of the smaller Gram matrix (X^T X, or
  X X^T and then v = X^T u / s): the same vectors as an SVD, with a
  derivative that stays finite when the map has fewer positions than
  channels (an SVD's derivative is not, through its repeated zero singular
  values). Each vector's sign is fixed so that its entries sum to >= 0
  (`_sign_fixed`).
  """
  b, h, w, c = jnp.shape(f_NHWC)
  x = jnp.reshape(f_NHWC, (b, h * w, c))
  if c <= h * w:
    lam, vecs = _eigh(jnp.einsum('nxc,nxd->ncd', x, x))
    lam, v = lam[:, ::-1][:, :n], vecs[:, :, ::-1][:, :, :n]
    s = jnp.sqrt(jnp.maximum(lam, 0.0))
  else:
    lam, vecs = _eigh(jnp.einsum('nxc,nyc->nxy', x, x))
    lam, u = lam[:, ::-1][:, :n], vecs[:, :, ::-1][:, :, :n]
    s = jnp.sqrt(jnp.maximum(lam, 0.0))
    v = jnp.einsum('nxc,nxk->nck', x, u) / s[:, None, :]
  v, s = _sign_fixed(_finite(v)), _finite(s)
  return relational.l2_normalize(v, axis=1), relational.l2_normalize(s, 1)


def _sign_fixed(v_NCk: jax.Array) -> jax.Array:
  """Each vector times the sign of its sum (+1 at a sum of 0).

  A singular vector's sign is arbitrary, and the loss depends on the
  teacher's (the relations compare consecutive stages' vectors): the
  reference takes whatever its LAPACK returns. Fixed here, so that the loss
  is a function of the maps; on non-negative maps (after a ReLU) the first
  vector's entries share one sign, and every vector positive gives the
  loss of every vector negative (the relations see differences only).
  """
  return v_NCk * jnp.where(jnp.sum(v_NCk, axis=1, keepdims=True) < 0, -1.0,
                           1.0).astype(v_NCk.dtype)


def kdsvd_align(v_s_NCm: jax.Array, v_t_NCk: jax.Array) -> jax.Array:
  """RepDistiller's `align_rsv`: for each teacher vector, the student vector
  of largest |cosine|, signed as that cosine, (N, C, k)."""
  cosine = jnp.einsum('ncm,nck->nmk', v_s_NCm, v_t_NCk)
  best = jnp.max(jnp.abs(cosine), axis=1, keepdims=True)
  mask = jnp.where(best == jnp.abs(cosine), jnp.sign(cosine),
                   jnp.zeros_like(cosine))
  return jnp.einsum('ncm,nmk->nck', v_s_NCm, mask)


def _rbf(v_NCk: jax.Array, v_prev_NDk: jax.Array) -> jax.Array:
  """(N, C, D, k) Gaussian kernel between two stages' scaled vectors."""
  d = v_NCk[:, :, None, :] - v_prev_NDk[:, None, :, :]
  return jnp.exp(-jnp.square(d) / KDSVD_RBF_SCALE)


def kdsvd_loss(feats_s: list[jax.Array], feats_t: list[jax.Array],
               k: int = KDSVD_K) -> jax.Array:
  """KDSVD over a network's stage outputs, in order (RepDistiller `KDSVD`,
  the sum of its per-pair losses).

  Args:
    feats_s: the student's stage maps, each (N, H_i, W_i, C_i).
    feats_t: the teacher's, the same count, the same N and C_i.
    k: the teacher's singular vectors per stage (>= 1).

  Raises:
    ValueError: for fewer than two stages, different stage counts, or a
      stage whose batch or channel counts differ.
  """
  if len(feats_s) != len(feats_t) or len(feats_s) < 2:
    raise ValueError(f'KDSVD needs the same number (>= 2) of student and '
                     f'teacher stages, got {len(feats_s)} and '
                     f'{len(feats_t)}.')
  if k < 1:
    raise ValueError(f'KDSVD: k={k} must be >= 1.')
  total, prev = 0.0, None
  for i, (f_s, f_t) in enumerate(zip(feats_s, feats_t)):
    checks.check_4d(f'KDSVD student stage {i + 1}', f_s)
    checks.check_4d(f'KDSVD teacher stage {i + 1}', f_t)
    if (jnp.shape(f_s)[0], jnp.shape(f_s)[3]) != (jnp.shape(f_t)[0],
                                                   jnp.shape(f_t)[3]):
      raise ValueError(
          f'KDSVD at stage {i + 1}: student {jnp.shape(f_s)} and teacher '
          f'{jnp.shape(f_t)} maps need the same batch and channel counts.')
    v_t, s_t = kdsvd_singular(
        jax.lax.stop_gradient(checks.as_float(f_t)), k)
    v_s, _ = kdsvd_singular(checks.as_float(f_s), k + KDSVD_EXTRA)
    v_s = kdsvd_align(v_s, v_t)
    scale = s_t[:, None, :]
    v_t, v_s = v_t * scale, v_s * scale
    if prev is not None:
      r_s = _rbf(v_s, prev[0])
      r_t = jax.lax.stop_gradient(_rbf(v_t, prev[1]))
      total = total + jnp.sum(_finite(jnp.square(r_s - r_t)))
    prev = (v_s, v_t)
  return total / jnp.shape(feats_s[0])[0]
