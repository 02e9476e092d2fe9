"""VID (variational information distillation): the loss against float64
references and its gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from tests.conftest import JIT
from tests.conftest import maybe_jit
from tests.conftest import rand


def _np_pool(f, h, w):
  """Reference adaptive average pooling, torch's bins, float64 numpy."""
  f = np.asarray(f, np.float64)
  big_h, big_w = f.shape[1:3]
  out = np.zeros((f.shape[0], h, w, f.shape[3]))
  for i in range(h):
    h0, h1 = math.floor(i * big_h / h), math.ceil((i + 1) * big_h / h)
    for j in range(w):
      w0, w1 = math.floor(j * big_w / w), math.ceil((j + 1) * big_w / w)
      out[:, i, j] = f[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return out


def _np_vid(f_t, mu, alpha, eps=1e-5):
  """Reference VID loss: mean 0.5 ((t - mu)^2 / var + log var), float64."""
  mu = np.asarray(mu, np.float64)
  t = _np_pool(f_t, *mu.shape[1:3])
  var = np.log1p(np.exp(np.asarray(alpha, np.float64))) + eps
  return np.mean(0.5 * ((t - mu)**2 / var + np.log(var)))


def test_vid_loss_hand_value():
  """t = [[1, 2], [3, 4]] pooled to 2.5, mu = 0, var = 1: 0.5 * 2.5^2."""
  f_t = np.array([[1., 2.], [3., 4.]], np.float32).reshape(1, 2, 2, 1)
  alpha = np.full((1,), losses.vid_alpha_init(1.0), np.float32)
  np.testing.assert_allclose(losses.vid_variance(alpha), [1.0], rtol=1e-6)
  value = losses.vid_loss(f_t, np.zeros((1, 1, 1, 1), np.float32), alpha)
  np.testing.assert_allclose(value, 3.125, rtol=1e-6)


@JIT
@pytest.mark.parametrize('t_hw,s_hw', [((4, 4), (4, 4)), ((8, 8), (4, 4)),
                                       ((5, 7), (3, 2))],
                         ids=['equal', 'divisible', 'uneven'])
def test_vid_loss_matches_the_float64_reference(jit, t_hw, s_hw):
  """float32 and float64 against numpy, the teacher's map pooled if larger."""
  f_t, mu = rand((2, *t_hw, 3), 0), rand((2, *s_hw, 3), 1, offset=0.5)
  alpha = rand((3,), 2, scale=2.0)
  expected = _np_vid(f_t, mu, alpha)
  got = maybe_jit(losses.vid_loss, jit)(f_t, mu, alpha)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=2e-6)
  with jax.enable_x64(True):
    got64 = maybe_jit(losses.vid_loss, jit)(
        *(np.asarray(a, np.float64) for a in (f_t, mu, alpha)))
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(got64, expected, rtol=1e-12)


def test_vid_gradient_is_the_hand_derivative():
  """d/dmu = (mu - t) / (var M); d/dalpha_c = sigmoid(alpha_c) / M *
  sum_{n,h,w} 0.5 (1 / var_c - (t - mu)^2 / var_c^2); none into t."""
  with jax.enable_x64(True):
    f_t = np.asarray(rand((2, 3, 3, 4), 3), np.float64)
    mu = np.asarray(rand((2, 3, 3, 4), 4), np.float64)
    alpha = np.asarray(rand((4,), 5), np.float64)
    g_t, g_mu, g_alpha = jax.grad(losses.vid_loss, argnums=(0, 1, 2))(
        f_t, mu, alpha)
  var = np.log1p(np.exp(alpha)) + 1e-5
  size = f_t.size
  np.testing.assert_allclose(g_mu, (mu - f_t) / var / size, rtol=1e-10)
  expected = (1 / (1 + np.exp(-alpha)) / size * np.sum(
      0.5 * (1 / var - (f_t - mu)**2 / var**2), axis=(0, 1, 2)))
  np.testing.assert_allclose(g_alpha, expected, rtol=1e-10)
  assert not np.any(g_t)


def test_pooling_bins_and_errors():
  """5 -> 3 averages [0, 2), [1, 4), [3, 5), as torch; bad sizes fail."""
  f = rand((1, 5, 6, 2), 6)
  np.testing.assert_allclose(losses.adaptive_avg_pool(f, 3, 4),
                             _np_pool(f, 3, 4), rtol=1e-6, atol=1e-7)
  row = np.arange(5, dtype=np.float32).reshape(1, 5, 1, 1)
  np.testing.assert_allclose(
      losses.adaptive_avg_pool(row, 3, 1).ravel(), [0.5, 2.0, 3.5])
  with pytest.raises(ValueError, match='cannot pool a 5x6 map to 6x1'):
    losses.adaptive_avg_pool(f, 6, 1)
  with pytest.raises(ValueError, match='larger than the teacher map 2x2'):
    losses.vid_loss(rand((1, 2, 2, 2), 0), rand((1, 4, 4, 2), 1),
                    np.zeros(2, np.float32))
  with pytest.raises(ValueError, match='alpha has shape'):
    losses.vid_loss(rand((1, 2, 2, 2), 0), rand((1, 2, 2, 2), 1),
                    np.zeros(3, np.float32))
  with pytest.raises(ValueError, match='init_pred_var > eps > 0'):
    losses.vid_alpha_init(1e-6, 1e-5)
