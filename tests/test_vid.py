"""VID (variational information distillation): the loss against float64
references, its gradient, the regressor and the method's training steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.methods import objective
from adain_kd_jax.methods import vid_regressor
from configs import smoke
from tests.conftest import JIT
from tests.conftest import make_teacher_variables
from tests.conftest import maybe_jit
from tests.conftest import train_a_few_steps
from tests.conftest import rand
from tests.conftest import term_inputs

IMAGE_SHAPE = (28, 28, 1)


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


def test_regressor_is_three_bias_free_1x1_convs_after_pooling():
  """A taller student map is pooled to the teacher's, then
  conv-relu-conv-relu-conv to the teacher's channels; alpha starts at
  log(exp(5 - eps) - 1), the convs at U(+-1 / sqrt(fan_in))."""
  module = vid_regressor.VIDRegressor(6, (4, 4), losses.vid_alpha_init())
  x = rand((2, 8, 8, 5), 7)
  variables = module.init(jax.random.key(0), x)
  params = variables['params']
  assert set(variables) == {'params'}  # No BatchNorm, no bias.
  assert {k: jax.tree.map(np.shape, v) for k, v in params.items()} == {
      'alpha': (6,), 'conv1': {'kernel': (1, 1, 5, 6)},
      'conv2': {'kernel': (1, 1, 6, 6)}, 'conv3': {'kernel': (1, 1, 6, 6)}}
  np.testing.assert_allclose(params['alpha'],
                             np.log(np.exp(5.0 - 1e-5) - 1.0), rtol=1e-6)
  for name, fan_in in (('conv1', 5), ('conv2', 6)):
    assert float(np.abs(params[name]['kernel']).max()) <= 1 / fan_in**0.5
  mean, alpha = module.apply(variables, x)
  w = [np.asarray(params[f'conv{i}']['kernel'][0, 0], np.float64)
       for i in (1, 2, 3)]
  h = _np_pool(x, 4, 4) @ w[0]
  expected = np.maximum(np.maximum(h, 0) @ w[1], 0) @ w[2]
  np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(alpha, params['alpha'])


def test_adapter_rejects_maps_no_pooling_matches():
  """Taller but narrower than the teacher's map: an error naming the stage."""
  shapes = base.Shapes(
      student={'stage1': jax.ShapeDtypeStruct((1, 8, 2, 4), jnp.float32)},
      teacher={'stage1': jax.ShapeDtypeStruct((1, 4, 4, 4), jnp.float32)},
      dtype=jnp.float32)
  with pytest.raises(ValueError, match='VID at stage1'):
    vid_regressor.VIDAdapter(stages=(1,)).build(None, shapes)


def _config(**vid):
  config = smoke.get_config()
  config.update(model='resnet8', teacher='resnet8', method='vid')
  for k, v in vid.items():
    config.vid[k] = v
  return config


def test_bad_settings_name_the_field():
  with pytest.raises(ValueError, match=r'config.vid.init_pred_var=1e-06'):
    objective.create(_config(init_pred_var=1e-6), 10, IMAGE_SHAPE)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32),
          'index': rng.permutation(64)[:16].astype(np.int32)}


def test_the_term_is_the_sum_over_every_stage():
  """vid = sum_k L_vid(f_t^k, regressor_k(f_s^k)), CE + 1 x vid."""
  distiller = objective.create(_config(), 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [('ce', 1.0),
                                                    ('vid', 1.0)]
  got = term_inputs(distiller, _batch(0))
  variables, loss, metrics, f_s, f_t = (
      got[k] for k in ('variables', 'loss', 'metrics', 'f_s', 'f_t'))
  out = distiller.adapter('vid').apply(
      {'params': variables['params']['vid']}, f_s)
  expected = sum(_np_vid(f_t[f'stage{k}'], *out[f'stage{k}'])
                 for k in (1, 2, 3))
  np.testing.assert_allclose(metrics['vid'], expected, rtol=1e-5)
  np.testing.assert_allclose(loss, metrics['ce'] + expected, rtol=1e-5)


def test_vid_trains_a_few_steps():
  """Four jitted steps: finite, every regressor leaf moves, the VID term
  goes down on a repeated batch."""
  config = _config()
  values, _, moved = train_a_few_steps(
      config, 'vid', _batch(1), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(values)) and values[-1] < values[0], values
  assert all(moved)
