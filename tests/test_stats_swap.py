"""The statistics-swap diagnostic against hand computations."""

import jax.numpy as jnp
import numpy as np

from adain_kd_jax import losses
from adain_kd_jax.experiments import stats_swap
from tests.conftest import rand


def _pool_fc(w_CK):
  return lambda h: jnp.mean(h, axis=(1, 2)) @ w_CK


def test_a_pool_and_classifier_tail_never_sees_the_std():
  """Pooling AdaIN's output gives the (replaced) mean: the std swap costs
  exactly nothing, the mean swap costs mean((mu_bar - mu) @ W)^2."""
  f_t = rand((4, 3, 3, 2), seed=1, scale=2.0, offset=0.5)
  w = np.asarray(rand((2, 5), seed=2))
  tail = _pool_fc(w)
  z_t = tail(f_t)
  errors = stats_swap.swap_errors(f_t, z_t, tail)
  np.testing.assert_allclose(errors['std'], 0.0, atol=1e-10)
  mu = np.asarray(f_t, np.float64).mean(axis=(1, 2))
  expected = np.mean(np.square((mu.mean(axis=0) - mu) @ w))
  np.testing.assert_allclose(errors['mean'], expected, rtol=1e-5)
  np.testing.assert_allclose(errors['both'], expected, rtol=1e-5)


def test_a_nonlinear_tail_sees_the_std():
  """Behind a ReLU the std matters: its swap has the hand-computed cost."""
  f_t = rand((4, 3, 3, 2), seed=3, scale=2.0)
  w = np.asarray(rand((2, 5), seed=4))
  tail = lambda h: _pool_fc(w)(jnp.maximum(h, 0.0))
  z_t = tail(f_t)
  errors = stats_swap.swap_errors(f_t, z_t, tail)
  mu, sigma = losses.channel_stats(f_t)
  h = losses.adain(f_t, mu, jnp.broadcast_to(sigma.mean(0), sigma.shape))
  expected = np.mean(np.square(np.asarray(tail(h)) - np.asarray(z_t)))
  assert expected > 1e-3
  np.testing.assert_allclose(errors['std'], expected, rtol=1e-5)


def test_identical_statistics_over_the_batch_cost_nothing():
  """Examples that share their statistics lose nothing to the averages."""
  one = rand((1, 3, 3, 2), seed=5)
  f_t = jnp.concatenate([one, one[:, ::-1], one[:, :, ::-1]], axis=0)
  w = np.asarray(rand((2, 5), seed=6))
  tail = lambda h: _pool_fc(w)(jnp.tanh(h))
  errors = stats_swap.swap_errors(f_t, tail(f_t), tail)
  for name in stats_swap.SWAPS:
    np.testing.assert_allclose(errors[name], 0.0, atol=1e-10)


def test_markdown_names_points_from_the_last_stage():
  table = {'teacher': 'resnet20', 'split': 'val', 'examples': 10,
           'points': [{'stage': 2, 'relative': -1, 'mean': 2.0, 'std': 0.5,
                       'both': 2.4},
                      {'stage': 3, 'relative': 0, 'mean': 4.0, 'std': 0.0,
                       'both': 4.0}]}
  text = stats_swap.to_markdown(table)
  assert '| S-1 (stage 2) | 2.0000 | 0.5000 | 2.4000 | 0.250 |' in text
  assert '| S (stage 3) | 4.0000 | 0.0000 | 4.0000 | 0.000 |' in text
