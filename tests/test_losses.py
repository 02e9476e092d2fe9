"""Tests for adain_kd_jax.losses: channel statistics, AdaIN, the AdaIN loss,
stat_l2, cross-entropy and KD (docs/method.md, sections "Channel statistics"
to "The objective")."""

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from tests.conftest import JIT
from tests.conftest import maybe_jit
from tests.conftest import rand

EPS = 1e-5
def _map_1221():
  """The 1x2x2x1 map [[1, 2], [3, 4]]: mean 2.5, unbiased variance 5/3."""
  return np.array([[1., 2.], [3., 4.]], np.float32).reshape(1, 2, 2, 1)


def _np_stats(f, eps=EPS):
  """Reference channel statistics in float64 numpy."""
  f = np.asarray(f, np.float64)
  return f.mean(axis=(1, 2)), np.sqrt(f.var(axis=(1, 2), ddof=1) + eps)


def _np_log_softmax(z):
  """Reference log-softmax over the last axis, float64 numpy."""
  z = np.asarray(z, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_kd(z_s, z_t, tau):
  """Reference tau^2 KL(p_t || p_s), batch mean, float64 numpy."""
  log_p_s = _np_log_softmax(np.asarray(z_s) / tau)
  log_p_t = _np_log_softmax(np.asarray(z_t) / tau)
  return tau**2 * np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), -1))


def _pool_linear_tail(c=3, k=5, seed=0):
  """Tail of the k = S case: global average pooling + linear classifier."""
  rng = np.random.default_rng(seed)
  w_CK = rng.normal(size=(c, k)).astype(np.float32)
  b_K = rng.normal(size=(k,)).astype(np.float32)

  def tail(f_NHWC):
    return jnp.mean(f_NHWC, axis=(1, 2)) @ w_CK + b_K

  return tail, w_CK, b_K


def _nonlinear_tail(c=3, k=5, seed=1):
  """Tail of the k = S-1 case: 3x3 conv + relu + pooling + linear, fixed."""
  rng = np.random.default_rng(seed)
  conv_HWIO = (rng.normal(size=(3, 3, c, 4)) / 3).astype(np.float32)
  w_DK = rng.normal(size=(4, k)).astype(np.float32)
  b_K = rng.normal(size=(k,)).astype(np.float32)

  def tail(f_NHWC):
    g_NHWD = jax.lax.conv_general_dilated(
        f_NHWC, conv_HWIO.astype(f_NHWC.dtype), (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.mean(jax.nn.relu(g_NHWD), axis=(1, 2)) @ w_DK + b_K

  return tail


# ----------------------------------------------------------- cross_entropy


@JIT
def test_cross_entropy_hand_values(jit):
  """CE of [0, 0]->0 is ln 2 and of [ln 3, 0]->1 is ln 4; mean 1.5 ln 2."""
  logits = np.array([[0., 0.], [np.log(3.), 0.]], np.float32)
  labels = np.array([0, 1])
  ce = maybe_jit(losses.cross_entropy, jit)(logits, labels)
  np.testing.assert_allclose(ce, 1.5 * np.log(2.), rtol=1e-6)


@JIT
def test_cross_entropy_mask(jit):
  """A mask averages over the kept examples only: [1, 0] keeps ln 2."""
  logits = np.array([[0., 0.], [np.log(3.), 0.]], np.float32)
  labels = np.array([0, 1])
  fn = maybe_jit(losses.cross_entropy, jit)
  np.testing.assert_allclose(fn(logits, labels, np.array([1., 0.])),
                             np.log(2.), rtol=1e-6)
  np.testing.assert_allclose(fn(logits, labels, np.array([0., 1.])),
                             np.log(4.), rtol=1e-6)
  np.testing.assert_allclose(fn(logits, labels, np.array([1., 1.])),
                             1.5 * np.log(2.), rtol=1e-6)


def test_cross_entropy_all_masked_is_zero_with_finite_grad():
  """An all-zero mask gives loss 0 and a zero (not NaN) gradient."""
  logits = np.array([[0., 0.], [np.log(3.), 0.]], np.float32)
  labels = np.array([0, 1])
  mask = np.zeros(2, np.float32)
  value, grad = jax.jit(jax.value_and_grad(losses.cross_entropy))(
      logits, labels, mask)
  np.testing.assert_allclose(value, 0.0)
  np.testing.assert_allclose(grad, np.zeros_like(logits))


# ---------------------------------------------------------------------- kd


def test_kd_zero_when_logits_equal():
  """KD is 0 when student and teacher logits are equal (under jit)."""
  z = rand((4, 10), seed=0, scale=3.)
  np.testing.assert_allclose(jax.jit(losses.kd)(z, z), 0., atol=1e-6)


@JIT
def test_kd_hand_value(jit):
  """tau=1, z_s=[0,0], z_t=[ln 3, 0]: KL([3/4,1/4]||[1/2,1/2])."""
  z_s = np.array([[0., 0.]], np.float32)
  z_t = np.array([[np.log(3.), 0.]], np.float32)
  expected = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
  got = maybe_jit(losses.kd, jit, temperature=1.0)(z_s, z_t)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # tau = 2 scales the logits by 1/2 and the loss by 4.
  z_t2 = 2. * z_t
  got2 = maybe_jit(losses.kd, jit, temperature=2.0)(z_s, z_t2)
  np.testing.assert_allclose(got2, 4. * expected, rtol=1e-5)


def test_kd_matches_numpy_reference():
  """KD on random logits matches a float64 numpy reference (tau = 4)."""
  z_s, z_t = rand((6, 7), 1, 3.), rand((6, 7), 2, 3.)
  np.testing.assert_allclose(losses.kd(z_s, z_t), _np_kd(z_s, z_t, 4.),
                             rtol=1e-5)


def test_kd_gradient_closed_form():
  """dKD/dz_s = tau (softmax(z_s/tau) - softmax(z_t/tau)) / N; 0 for z_t."""
  tau, n = 4.0, 6
  z_s, z_t = rand((n, 7), 3, 3.), rand((n, 7), 4, 3.)
  grad_fn = jax.grad(lambda a, b: losses.kd(a, b, tau), argnums=(0, 1))
  g_s, g_t = jax.jit(grad_fn)(z_s, z_t)
  p_s = np.exp(_np_log_softmax(z_s / tau))
  p_t = np.exp(_np_log_softmax(z_t / tau))
  np.testing.assert_allclose(g_s, tau * (p_s - p_t) / n, atol=1e-6)
  np.testing.assert_array_equal(g_t, np.zeros_like(z_t))


# ----------------------------------------------------------- channel_stats


@JIT
def test_channel_stats_hand_values(jit):
  """[[1, 2], [3, 4]] has mean 2.5 and sigma sqrt(5/3 + eps)."""
  mu, sigma = maybe_jit(losses.channel_stats, jit)(_map_1221())
  assert mu.shape == sigma.shape == (1, 1)
  np.testing.assert_allclose(mu, [[2.5]], rtol=1e-6)
  np.testing.assert_allclose(sigma, [[np.sqrt(5. / 3. + EPS)]], rtol=1e-6)


def test_channel_stats_matches_numpy():
  """Per-(n, c) stats of a random map match numpy (ddof=1, + eps)."""
  f = rand((2, 3, 4, 5), seed=5, scale=2., offset=1.)
  mu, sigma = jax.jit(losses.channel_stats)(f)
  mu_ref, sigma_ref = _np_stats(f)
  assert mu.shape == sigma.shape == (2, 5)
  np.testing.assert_allclose(mu, mu_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-5)


def test_channel_stats_bfloat16_computes_in_float32():
  """A bfloat16 map gives float32 stats equal to those of its f32 values."""
  f = jnp.asarray(rand((2, 4, 4, 3), seed=6, offset=3.), jnp.bfloat16)
  mu, sigma = losses.channel_stats(f)
  assert mu.dtype == sigma.dtype == jnp.float32
  mu_ref, sigma_ref = _np_stats(np.asarray(f.astype(jnp.float32)))
  np.testing.assert_allclose(mu, mu_ref, rtol=1e-6)
  np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-5)


@pytest.mark.parametrize('hw', [(1, 1), (0, 3)], ids=['1x1', '0x3'])
def test_channel_stats_single_position_raises(hw):
  """H*W < 2 raises a ValueError naming the requirement."""
  f = np.ones((2, *hw, 3), np.float32)
  with pytest.raises(ValueError, match=r'H\*W >= 2'):
    losses.channel_stats(f)
  with pytest.raises(ValueError, match=r'H\*W >= 2'):
    jax.jit(losses.channel_stats)(f)


def test_single_position_raises_in_every_stats_loss():
  """adain, adain_loss and stat_l2 reject a 1x1 map on either side."""
  ok = rand((2, 3, 3, 4), seed=7)
  bad = np.ones((2, 1, 1, 4), np.float32)
  tail = lambda f: jnp.mean(f, axis=(1, 2))
  z_t = np.zeros((2, 4), np.float32)
  with pytest.raises(ValueError, match=r'H\*W >= 2'):
    losses.adain(bad, np.zeros((2, 4)), np.ones((2, 4)))
  with pytest.raises(ValueError, match=r'H\*W >= 2'):
    losses.adain_loss(ok, bad, z_t, tail)
  with pytest.raises(ValueError, match=r'H\*W >= 2'):
    losses.adain_loss(bad, ok, z_t, tail)
  with pytest.raises(ValueError, match=r'H\*W >= 2'):
    losses.stat_l2(ok, bad)


def test_channel_stats_rejects_non_4d():
  """A map that is not (N, H, W, C) raises a ValueError."""
  with pytest.raises(ValueError, match='4-D'):
    losses.channel_stats(np.ones((2, 4, 4), np.float32))


# ------------------------------------------------------------------- adain


@JIT
def test_adain_hand_values(jit):
  """AdaIN of [[1, 2], [3, 4]] to (mu=10, sigma=2) is 10 + 2 z-scores."""
  f = _map_1221()
  out = maybe_jit(losses.adain, jit)(
      f, np.array([[10.]], np.float32), np.array([[2.]], np.float32))
  expected = 10. + 2. * (f - 2.5) / np.sqrt(5. / 3. + EPS)
  np.testing.assert_allclose(out, expected, rtol=1e-6)


@JIT
def test_adain_identity_when_stats_match(jit):
  """mu_s = mu_t and sigma_s = sigma_t make AdaIN return f_t."""
  f_t = rand((2, 4, 5, 3), seed=8, scale=2., offset=-1.)
  mu_t, sigma_t = losses.channel_stats(f_t)
  out = maybe_jit(losses.adain, jit)(f_t, mu_t, sigma_t)
  np.testing.assert_allclose(out, f_t, rtol=1e-5, atol=1e-5)


@JIT
def test_adain_output_statistics(jit):
  """mu(AdaIN) = mu_s exactly; sigma(AdaIN) = sigma_s up to eps.

  Tolerance reasoning: AdaIN's output has variance sigma_s^2 var_t /
  (var_t + eps), so sigma(AdaIN)^2 = sigma_s^2 var_t / (var_t + eps) + eps and
  |sigma(AdaIN)^2 - sigma_s^2| = eps |1 - sigma_s^2 / sigma_t^2|. That bound
  (plus float32 round-off, ~1e-6 relative) is what is asserted, besides the
  exact formula; with eps = 0 the std is exactly sigma_s.
  """
  f_t = rand((3, 4, 4, 2), seed=9, scale=0.5, offset=2.)
  mu_s = rand((3, 2), seed=10, scale=3.)
  sigma_s = np.abs(rand((3, 2), seed=11, scale=2.)) + 0.1
  out = maybe_jit(losses.adain, jit)(f_t, mu_s, sigma_s)
  mu_out, sigma_out = _np_stats(out)
  np.testing.assert_allclose(mu_out, mu_s, rtol=1e-5, atol=1e-5)
  _, sigma_t = _np_stats(f_t)
  var_t = sigma_t**2 - EPS
  expected_sq = sigma_s.astype(np.float64)**2 * var_t / (var_t + EPS) + EPS
  np.testing.assert_allclose(sigma_out**2, expected_sq, rtol=1e-5)
  bound = EPS * np.abs(1. - sigma_s.astype(np.float64)**2 / sigma_t**2)
  roundoff = 1e-5 * sigma_s.astype(np.float64)**2
  assert np.all(np.abs(sigma_out**2 - sigma_s**2) <= bound + roundoff)
  # eps = 0 on both sides: the std is sigma_s to float32 precision.
  out0 = maybe_jit(losses.adain, jit, eps=0.)(f_t, mu_s, sigma_s)
  _, sigma_out0 = _np_stats(out0, eps=0.)
  np.testing.assert_allclose(sigma_out0, sigma_s, rtol=1e-5)


def test_adain_bfloat16_input_gives_float32():
  """A bfloat16 teacher map is renormalized in float32."""
  f_t = jnp.asarray(rand((1, 3, 3, 2), seed=12), jnp.bfloat16)
  out = losses.adain(f_t, jnp.zeros((1, 2)), jnp.ones((1, 2)))
  assert out.dtype == jnp.float32


def test_adain_rejects_bad_stat_shape():
  """Statistics whose channel count differs from f_t's raise ValueError."""
  with pytest.raises(ValueError, match='mu_s'):
    losses.adain(np.ones((2, 3, 3, 4)), np.zeros((2, 5)), np.ones((2, 4)))
  with pytest.raises(ValueError, match='sigma_s'):
    losses.adain(np.ones((2, 3, 3, 4)), np.zeros((2, 4)), np.ones((4,)))


# -------------------------------------------------------------- adain_loss


def _stats_matched_student(f_t, hw, seed):
  """A student map of spatial size hw with exactly f_t's (eps=0) stats."""
  mu_t, sigma_t = losses.channel_stats(f_t, eps=0.)
  base = rand((f_t.shape[0], *hw, f_t.shape[-1]), seed=seed)
  return np.asarray(losses.adain(base, mu_t, sigma_t, eps=0.))


@JIT
@pytest.mark.parametrize('kind', ['mse', 'kl'])
def test_adain_loss_zero_when_stats_match(kind, jit):
  """Matching statistics give L_adain = 0, even with a nonlinear tail."""
  tail = _nonlinear_tail()
  f_t = rand((2, 4, 4, 3), seed=13, scale=1.5, offset=0.5)
  z_t = tail(f_t)
  fn = maybe_jit(losses.adain_loss, jit, tail_fn=tail, kind=kind)
  # float32 rounding of the tail's logits, times tau^2 = 16 for 'kl' (its
  # jitted value was 1.02e-6 on an AMD EPYC CPU).
  atol = 1e-6 * (16 if kind == 'kl' else 1)
  # Same map: the statistics match for any eps.
  np.testing.assert_allclose(fn(f_t, f_t, z_t), 0., atol=atol)
  # A spatially flipped map has the same statistics.
  np.testing.assert_allclose(fn(f_t, f_t[:, ::-1, ::-1], z_t), 0., atol=atol)
  # A student map of another spatial size with the same statistics (eps=0).
  f_s = _stats_matched_student(f_t, (6, 3), seed=14)
  fn0 = maybe_jit(losses.adain_loss, jit, tail_fn=tail, kind=kind, eps=0.)
  np.testing.assert_allclose(fn0(f_t, f_s, z_t), 0., atol=atol)


def test_stats_matched_student_fixture():
  """The eps=0 stats-matched student of another size has f_t's stats."""
  f_t = rand((2, 4, 4, 3), seed=13, scale=1.5, offset=0.5)
  f_s = _stats_matched_student(f_t, (6, 3), seed=14)
  assert f_s.shape == (2, 6, 3, 3)
  mu_t, sigma_t = _np_stats(f_t, eps=0.)
  mu_s, sigma_s = _np_stats(f_s, eps=0.)
  np.testing.assert_allclose(mu_s, mu_t, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sigma_s, sigma_t, rtol=1e-5)


@JIT
def test_adain_loss_pool_linear_tail_is_fc_of_mu_s(jit):
  """With a pool + linear tail (k = S), L_adain = mean (fc(mu_s) - z_t)^2."""
  tail, w, b = _pool_linear_tail()
  f_t = rand((2, 4, 4, 3), seed=15)
  f_s = rand((2, 3, 5, 3), seed=16, scale=2., offset=1.)
  z_t = tail(f_t)
  got = maybe_jit(losses.adain_loss, jit, tail_fn=tail)(f_t, f_s, z_t)
  mu_s, _ = _np_stats(f_s)
  expected = np.mean((mu_s @ w + b - np.asarray(z_t, np.float64))**2)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('kind', ['mse', 'kl'])
def test_pool_linear_tail_ignores_sigma_s(kind):
  """With pool + linear, sigma_s has zero gradient and changing it is moot."""
  tail, _, _ = _pool_linear_tail()
  f_t = rand((2, 4, 4, 3), seed=17)
  z_t = tail(f_t) + 0.5
  f_s = rand((2, 3, 5, 3), seed=18, scale=2., offset=1.)
  mu_s, sigma_s = losses.channel_stats(f_s)

  def loss_of_stats(mu, sigma):
    z = tail(losses.adain(f_t, mu, sigma))
    if kind == 'mse':
      return jnp.mean((z - z_t)**2)
    return losses.kd(z, z_t)

  g_mu, g_sigma = jax.jit(jax.grad(loss_of_stats, argnums=(0, 1)))(
      mu_s, sigma_s)
  np.testing.assert_allclose(g_sigma, 0., atol=1e-6)
  assert np.abs(g_mu).max() > 1e-3
  # Rescaling the student's spatial deviations changes sigma_s, not mu_s.
  f_s_mu = np.asarray(mu_s)[:, None, None, :]

  @jax.jit
  def loss_of_scale(scale):
    f = f_s_mu + scale * (f_s - f_s_mu)
    return losses.adain_loss(f_t, f, z_t, tail, kind=kind)

  np.testing.assert_allclose(loss_of_scale(3.0), loss_of_scale(1.0),
                             rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.grad(loss_of_scale))(1.0), 0.,
                             atol=1e-5)


@pytest.mark.parametrize('kind', ['mse', 'kl'])
def test_nonlinear_tail_depends_on_sigma_s(kind):
  """With relu before pooling, sigma_s changes the loss (non-zero grad)."""
  tail = _nonlinear_tail()
  f_t = rand((2, 4, 4, 3), seed=19)
  z_t = tail(f_t)
  f_s = rand((2, 3, 5, 3), seed=20, scale=2., offset=1.)
  mu_s, sigma_s = losses.channel_stats(f_s)
  f_s_mu = np.asarray(mu_s)[:, None, None, :]

  @jax.jit
  def loss_of_scale(scale):
    f = f_s_mu + scale * (f_s - f_s_mu)
    return losses.adain_loss(f_t, f, z_t, tail, kind=kind)

  assert abs(float(loss_of_scale(3.0)) - float(loss_of_scale(1.0))) > 1e-3
  assert abs(float(jax.jit(jax.grad(loss_of_scale))(1.0))) > 1e-4

  @jax.jit
  def loss_of_sigma(sigma):
    z = tail(losses.adain(f_t, mu_s, sigma))
    return jnp.mean((z - z_t)**2)

  assert np.abs(jax.jit(jax.grad(loss_of_sigma))(sigma_s)).max() > 1e-4


@pytest.mark.parametrize('kind', ['mse', 'kl'])
def test_adain_loss_gradients_reach_student_only(kind):
  """f_s gets a non-zero gradient; f_t and z_t get exactly zero (jit)."""
  tail = _nonlinear_tail()
  f_t = rand((2, 4, 4, 3), seed=21)
  z_t = tail(f_t)
  f_s = rand((2, 3, 5, 3), seed=22, scale=2., offset=1.)
  grad_fn = jax.grad(
      lambda a, b, c: losses.adain_loss(a, b, c, tail, kind=kind),
      argnums=(0, 1, 2))
  g_t, g_s, g_z = jax.jit(grad_fn)(f_t, f_s, z_t)
  assert np.abs(g_s).max() > 1e-4
  assert np.all(np.isfinite(g_s))
  np.testing.assert_array_equal(g_t, np.zeros_like(f_t))
  np.testing.assert_array_equal(g_z, np.zeros_like(z_t))


@JIT
def test_adain_loss_kl_kind(jit):
  """kind='kl' is tau^2 KL(softmax(z_t/tau) || softmax(z/tau)), batch mean."""
  tail = _nonlinear_tail()
  f_t = rand((2, 4, 4, 3), seed=23)
  z_t = tail(f_t)
  f_s = rand((2, 3, 5, 3), seed=24, scale=2., offset=1.)
  mu_s, sigma_s = losses.channel_stats(f_s)
  z = tail(losses.adain(f_t, mu_s, sigma_s))
  for tau in (1.0, 4.0):
    got = maybe_jit(losses.adain_loss, jit, tail_fn=tail, kind='kl',
                     temperature=tau)(f_t, f_s, z_t)
    np.testing.assert_allclose(got, _np_kd(z, z_t, tau), rtol=1e-4)
  mse = losses.adain_loss(f_t, f_s, z_t, tail)
  np.testing.assert_allclose(
      mse, np.mean((np.asarray(z) - np.asarray(z_t))**2), rtol=1e-5)


@JIT
def test_adain_loss_ce_kind(jit):
  """kind='ce' is the cross-entropy of the tail's AdaIN logits vs labels."""
  tail = _nonlinear_tail()
  f_t = rand((2, 4, 4, 3), seed=23)
  z_t = tail(f_t)
  f_s = rand((2, 3, 5, 3), seed=24, scale=2., offset=1.)
  labels = np.array([1, 0])
  mu_s, sigma_s = _np_stats(f_s)
  z = np.asarray(tail(losses.adain(f_t, mu_s, sigma_s)), np.float64)
  log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
  expected = -np.mean(log_p[np.arange(2), labels])
  fn = maybe_jit(lambda a, b, c, y: losses.adain_loss(
      a, b, c, tail, kind='ce', labels_N=y), jit)
  got = fn(f_t, f_s, z_t, labels)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  with pytest.raises(ValueError, match="'ce' needs labels_N"):
    losses.adain_loss(f_t, f_s, z_t, tail, kind='ce')


@pytest.mark.parametrize('stats', ['mean', 'std'])
def test_adain_loss_stats_keep_the_teachers_other_statistic(stats):
  """stats='mean' uses (mu_s, sigma_t); 'std' uses (mu_t, sigma_s)."""
  tail = _nonlinear_tail()
  f_t = rand((2, 4, 4, 3), seed=41, scale=1.5, offset=0.5)
  z_t = tail(f_t) + 0.2
  f_s = rand((2, 3, 5, 3), seed=42, scale=2., offset=1.)
  mu_t, sigma_t = _np_stats(f_t)
  mu_s, sigma_s = _np_stats(f_s)
  mu, sigma = (mu_s, sigma_t) if stats == 'mean' else (mu_t, sigma_s)
  z = np.asarray(tail(losses.adain(f_t, mu, sigma)), np.float64)
  expected = np.mean((z - np.asarray(z_t, np.float64))**2)
  got = jax.jit(lambda a, b, c: losses.adain_loss(
      a, b, c, tail, stats=stats))(f_t, f_s, z_t)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # The other statistic of the student does not matter: rescaling the
  # student's spatial deviations moves only sigma_s; shifting it only mu_s.
  f_s_mu = np.asarray(mu_s)[:, None, None, :]
  other = (f_s_mu + 3. * (f_s - f_s_mu) if stats == 'mean' else f_s + 2.)
  np.testing.assert_allclose(
      losses.adain_loss(f_t, other, z_t, tail, stats=stats), got, rtol=1e-5)
  moved = (f_s + 2. if stats == 'mean' else f_s_mu + 3. * (f_s - f_s_mu))
  assert abs(float(losses.adain_loss(f_t, moved, z_t, tail, stats=stats))
             - float(got)) > 1e-3


def test_adain_loss_unknown_stats_raises():
  f = rand((2, 3, 3, 4), seed=25)
  with pytest.raises(ValueError, match=r"'var'.*'both'.*'mean'.*'std'"):
    losses.adain_loss(f, f, np.zeros((2, 4)), lambda h: h.mean((1, 2)),
                      stats='var')


def test_adain_loss_unknown_kind_raises():
  """An unknown kind raises a ValueError that lists the valid kinds."""
  f = rand((2, 3, 3, 4), seed=25)
  with pytest.raises(ValueError, match=r"'l1'.*'mse'.*'kl'"):
    losses.adain_loss(f, f, np.zeros((2, 4)), lambda h: h.mean((1, 2)),
                      kind='l1')


def test_adain_loss_shape_mismatch_raises():
  """Channel or batch mismatch between f_t and f_s raises a ValueError."""
  tail = lambda h: h.mean((1, 2))
  f_t = rand((2, 3, 3, 4), seed=26)
  with pytest.raises(ValueError, match='Channel mismatch.*4.*5'):
    losses.adain_loss(f_t, rand((2, 3, 3, 5), 27), np.zeros((2, 4)), tail)
  with pytest.raises(ValueError, match='Batch mismatch'):
    losses.adain_loss(f_t, rand((3, 3, 3, 4), 28), np.zeros((2, 4)), tail)


# ------------------------------------------------------------- check_grads


def test_check_grads_channel_stats():
  """channel_stats has correct reverse-mode gradients (float64)."""
  with jax.enable_x64(True):
    f = jnp.asarray(rand((2, 3, 3, 2), seed=29), jnp.float64)
    jtu.check_grads(jax.jit(losses.channel_stats), (f,), order=1,
                    modes=['rev'])


def test_check_grads_adain():
  """adain has correct reverse-mode gradients w.r.t. mu_s and sigma_s."""
  with jax.enable_x64(True):
    f_t = jnp.asarray(rand((2, 3, 3, 2), seed=30), jnp.float64)
    mu_s = jnp.asarray(rand((2, 2), seed=31), jnp.float64)
    sigma_s = jnp.abs(jnp.asarray(rand((2, 2), seed=32), jnp.float64)) + 0.5
    jtu.check_grads(jax.jit(lambda m, s: losses.adain(f_t, m, s)),
                    (mu_s, sigma_s), order=1, modes=['rev'])


@pytest.mark.parametrize('kind', ['mse', 'kl'])
def test_check_grads_adain_loss(kind):
  """adain_loss has correct reverse-mode gradients w.r.t. f_s (float64)."""
  with jax.enable_x64(True):
    tail = _nonlinear_tail()
    f_t = jnp.asarray(rand((2, 4, 4, 3), seed=33), jnp.float64)
    z_t = tail(f_t) + 0.3
    f_s = jnp.asarray(rand((2, 3, 5, 3), seed=34), jnp.float64)
    assert f_s.dtype == jnp.float64
    jtu.check_grads(
        jax.jit(lambda x: losses.adain_loss(f_t, x, z_t, tail, kind=kind)),
        (f_s,), order=1, modes=['rev'])


# ------------------------------------------------------------ stat_l2


@JIT
def test_stat_l2_hand_value(jit):
  """Teacher [[1,2],[3,4]] vs student [0,1,2]: (1-2.5)^2 + sigma gap^2."""
  f_t = _map_1221()
  f_s = np.array([0., 1., 2.], np.float32).reshape(1, 1, 3, 1)
  expected = (1. - 2.5)**2 + (np.sqrt(1. + EPS) - np.sqrt(5. / 3. + EPS))**2
  got = maybe_jit(losses.stat_l2, jit)(f_t, f_s)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@JIT
def test_stat_mean_l2_hand_value(jit):
  """Teacher [[1,2],[3,4]] vs student [0,1,2]: (1 - 2.5)^2, the std unused;
  two channels average their squared mean gaps."""
  f_t = _map_1221()
  f_s = np.array([0., 1., 2.], np.float32).reshape(1, 1, 3, 1)
  got = maybe_jit(losses.stat_mean_l2, jit)(f_t, f_s)
  np.testing.assert_allclose(got, (1. - 2.5)**2, rtol=1e-6)
  f_t2 = np.concatenate([f_t, 10. * f_t], axis=-1)  # Means 2.5 and 25.
  f_s2 = np.concatenate([f_s, 3. * f_s], axis=-1)  # Means 1 and 3.
  got2 = maybe_jit(losses.stat_mean_l2, jit)(f_t2, f_s2)
  np.testing.assert_allclose(got2, ((1. - 2.5)**2 + (3. - 25.)**2) / 2,
                             rtol=1e-6)


def test_stat_mean_l2_gradient_reaches_student_only():
  """d/d f_s is 2 (mu_s - mu_t) / (C N H_s W_s) per element; f_t gets none."""
  f_t = rand((2, 4, 4, 3), seed=35)
  f_s = rand((2, 3, 5, 3), seed=36, offset=1.)
  g_t, g_s = jax.jit(jax.grad(losses.stat_mean_l2, argnums=(0, 1)))(f_t, f_s)
  np.testing.assert_array_equal(g_t, np.zeros_like(f_t))
  gap = (np.asarray(f_s, np.float64).mean(axis=(1, 2))
         - np.asarray(f_t, np.float64).mean(axis=(1, 2)))
  expected = np.broadcast_to((2 * gap / (2 * 3 * 15))[:, None, None, :],
                             f_s.shape)
  np.testing.assert_allclose(g_s, expected, rtol=1e-5)


def test_stat_l2_gradient_reaches_student_only():
  """stat_l2 gives f_s a gradient and f_t none; it is 0 for equal stats."""
  f_t = rand((2, 4, 4, 3), seed=35)
  f_s = rand((2, 3, 5, 3), seed=36, offset=1.)
  g_t, g_s = jax.jit(jax.grad(losses.stat_l2, argnums=(0, 1)))(f_t, f_s)
  np.testing.assert_array_equal(g_t, np.zeros_like(f_t))
  assert np.abs(g_s).max() > 1e-4
  np.testing.assert_allclose(losses.stat_l2(f_t, f_t[:, ::-1]), 0.,
                             atol=1e-10)
