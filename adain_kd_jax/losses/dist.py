"""DIST's loss: inter- and intra-class relations of the predictions (Huang
et al., NeurIPS 2022).

Written after the authors' `lib/models/losses/dist_kd.py` (repository
hunto/image_classification_sota, which hunto/DIST_KD points to for the
classification loss): with `y = softmax(z / tau)` per example,

  inter = 1 - mean_n pearson(y_s[n, :], y_t[n, :])   (over the classes),
  intra = 1 - mean_k pearson(y_s[:, k], y_t[:, k])   (over the batch),
  L = tau^2 (beta inter + gamma intra),

the Pearson correlation being the cosine of the centred vectors with 1e-8
added to the product of norms. Pure, float32 (float64 stays float64), the
teacher's logits without gradient. Shape suffixes: N batch, K classes.
"""

import jax
import jax.numpy as jnp

from adain_kd_jax.losses import checks

DIST_EPS = 1e-8  # The authors' cosine_similarity eps.


def _pearson_rows(a_NK: jax.Array, b_NK: jax.Array,
                  eps: float = DIST_EPS) -> jax.Array:
  """The Pearson correlation of each row pair, (N,)."""
  a = a_NK - jnp.mean(a_NK, axis=1, keepdims=True)
  b = b_NK - jnp.mean(b_NK, axis=1, keepdims=True)
  norm = lambda x: jnp.sqrt(jnp.sum(jnp.square(x), axis=1))
  return jnp.sum(a * b, axis=1) / (norm(a) * norm(b) + eps)


def dist_relations(logits_s_NK: jax.Array, logits_t_NK: jax.Array,
                   temperature: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """(inter, intra), each already times tau^2, as the authors' `DIST`."""
  if (jnp.ndim(logits_s_NK) != 2 or
      jnp.shape(logits_s_NK) != jnp.shape(logits_t_NK)):
    raise ValueError(
        f'DIST: logits {jnp.shape(logits_s_NK)} and '
        f'{jnp.shape(logits_t_NK)} must be (N, K) of the same shape.')
  y_s = jax.nn.softmax(checks.as_float(logits_s_NK) / temperature, -1)
  y_t = jax.lax.stop_gradient(jax.nn.softmax(
      checks.as_float(logits_t_NK) / temperature, -1))
  inter = 1.0 - jnp.mean(_pearson_rows(y_s, y_t))
  intra = 1.0 - jnp.mean(_pearson_rows(y_s.T, y_t.T))
  scale = temperature ** 2
  return scale * inter, scale * intra


def dist_loss(logits_s_NK: jax.Array, logits_t_NK: jax.Array,
              beta: float = 1.0, gamma: float = 1.0,
              temperature: float = 1.0) -> jax.Array:
  """DIST: `tau^2 (beta inter + gamma intra)` (the authors' `DIST.forward`).

  Raises:
    ValueError: unless both logits are (N, K) of the same shape.
  """
  inter, intra = dist_relations(logits_s_NK, logits_t_NK, temperature)
  return beta * inter + gamma * intra
