"""Tests for adain_kd_jax.losses.baselines: FitNet (the `fm` term and the hint
loss), attention transfer and decoupled KD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.losses import baselines as losses_baselines
from tests.conftest import JIT
from tests.conftest import maybe_jit
from tests.conftest import rand

# The 1x2x2x1 map [[1, 2], [3, 4]].
_MAP_1221 = np.array([[1., 2.], [3., 4.]], np.float32).reshape(1, 2, 2, 1)


def _np_softmax(z):
  """Reference softmax over the last axis, float64 numpy."""
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _np_kl(p, q):
  """Reference sum_k p log(p / q) over the last axis (0 log 0 = 0)."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  nz = p > 0
  terms = np.where(nz, p * np.log(np.where(nz, p, 1.) / np.where(nz, q, 1.)),
                   0.)
  return terms.sum(axis=-1)


# ---------------------------------------------------------------------- AT


def _np_attention(f, p=2):
  """Reference attention map: normalize(mean_c |f|^p), float64 numpy."""
  f = np.asarray(f, np.float64)
  a = (np.abs(f)**p).mean(axis=-1).reshape(f.shape[0], -1)
  return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _np_pool(f, h, w):
  """Reference exact adaptive average pooling (N, H, W, C) -> (N, h, w, C)."""
  n, big_h, big_w, c = f.shape
  return np.asarray(f, np.float64).reshape(
      n, h, big_h // h, w, big_w // w, c).mean(axis=(2, 4))


@JIT
def test_attention_map_hand_values(jit):
  """[[1, 2], [3, 4]] (plus a zero channel) gives [1, 4, 9, 16]/sqrt(354)."""
  f = np.zeros((1, 2, 2, 2), np.float32)
  f[0, :, :, 0] = [[1., 2.], [3., -4.]]  # |f|^2: the sign is irrelevant.
  a = maybe_jit(losses_baselines.attention_map, jit)(f)
  assert a.shape == (1, 4) and a.dtype == jnp.float32
  np.testing.assert_allclose(a, [[1., 4., 9., 16.]] / np.sqrt(354.),
                             rtol=1e-6)


def test_attention_map_zero_map_is_zero_with_finite_grad():
  """An all-zero map gives a zero attention map (eps clamp), no NaN grad."""
  f = np.zeros((2, 2, 3, 4), np.float32)
  np.testing.assert_array_equal(losses_baselines.attention_map(f),
                                np.zeros((2, 6)))
  g = jax.grad(lambda x: jnp.sum(losses_baselines.attention_map(x)))(f)
  assert np.all(np.isfinite(g))


@JIT
def test_at_hand_value(jit):
  """One-hot teacher attention [1,0,0,0] vs uniform student [.5]*4: 0.25."""
  f_t = np.zeros((1, 2, 2, 3), np.float32)
  f_t[0, 0, 0, :] = 2.
  f_s = np.ones((1, 2, 2, 5), np.float32)  # Channel counts may differ.
  got = maybe_jit(losses_baselines.at, jit)(f_t, f_s)
  np.testing.assert_allclose(got, 0.25, rtol=1e-6)


def test_at_zero_when_equal_and_matches_numpy():
  """AT is 0 for equal maps and matches a numpy reference otherwise."""
  f_t = rand((3, 4, 4, 6), seed=0)
  f_s = rand((3, 4, 4, 2), seed=1, scale=2.)
  fn = jax.jit(losses_baselines.at)
  np.testing.assert_allclose(fn(f_t, f_t), 0., atol=1e-9)
  expected = np.mean((_np_attention(f_s) - _np_attention(f_t))**2)
  np.testing.assert_allclose(fn(f_t, f_s), expected, rtol=1e-5)


@pytest.mark.parametrize('student_larger', [True, False])
def test_at_pools_the_larger_map(student_larger):
  """The larger map is average-pooled (features, exactly) to the smaller."""
  big = rand((2, 8, 4, 3), seed=2)
  small = rand((2, 4, 2, 5), seed=3)
  if student_larger:
    f_t, f_s = small, big
    expected = np.mean(
        (_np_attention(_np_pool(big, 4, 2)) - _np_attention(small))**2)
  else:
    f_t, f_s = big, small
    expected = np.mean(
        (_np_attention(small) - _np_attention(_np_pool(big, 4, 2)))**2)
  np.testing.assert_allclose(jax.jit(losses_baselines.at)(f_t, f_s),
                             expected, rtol=1e-5)


@pytest.mark.parametrize('hw_s, hw_t', [((3, 3), (2, 2)), ((4, 2), (2, 4)),
                                        ((6, 4), (4, 2))])
def test_at_rejects_inexact_resize(hw_s, hw_t):
  """Spatial sizes that do not divide (or cross) raise a ValueError."""
  f_s = np.ones((1, *hw_s, 2), np.float32)
  f_t = np.ones((1, *hw_t, 2), np.float32)
  with pytest.raises(ValueError, match='adaptive-average-pooling'):
    losses_baselines.at(f_t, f_s)


def test_at_rejects_batch_mismatch_and_non_4d():
  """Different batch sizes or non-4-D maps raise ValueErrors."""
  with pytest.raises(ValueError, match='Batch mismatch'):
    losses_baselines.at(np.ones((2, 2, 2, 1)), np.ones((3, 2, 2, 1)))
  with pytest.raises(ValueError, match='4-D'):
    losses_baselines.at(np.ones((2, 2, 2)), np.ones((2, 2, 2, 1)))


def test_at_gradient_student_only():
  """The student map gets a gradient, the teacher map none."""
  f_t = rand((2, 4, 4, 3), seed=4)
  f_s = rand((2, 8, 8, 2), seed=5)
  g_t, g_s = jax.jit(jax.grad(losses_baselines.at, argnums=(0, 1)))(f_t, f_s)
  np.testing.assert_array_equal(g_t, np.zeros_like(f_t))
  assert np.all(np.isfinite(g_s)) and np.abs(g_s).max() > 1e-6


# ----------------------------------------------------------- FitNet hint


@JIT
def test_hint_mse_zero_when_equal_and_hand_value(jit):
  """0 for the teacher feature itself; mean over (N, H, W, C) otherwise."""
  fn = maybe_jit(losses_baselines.hint_mse, jit)
  f_t = rand((2, 4, 4, 3), seed=50)
  assert float(fn(f_t, f_t)) == 0.0
  # One element of 24 off by 2: 4 / 24.
  f_s = np.zeros((1, 2, 4, 3), np.float32)
  f_s[0, 1, 2, 0] = 2.0
  np.testing.assert_allclose(fn(np.zeros_like(f_s), f_s), 4.0 / 24, rtol=1e-6)
  np.testing.assert_allclose(fn(f_t, f_t + 0.5), 0.25, rtol=1e-5)


def test_hint_mse_gradient_student_only_and_float32():
  """d/d f_s = 2 (f_s - f_t) / size; no gradient into the teacher feature."""
  f_t, f_s = rand((2, 3, 3, 2), seed=51), rand((2, 3, 3, 2), seed=52)
  g_t, g_s = jax.jit(jax.grad(losses_baselines.hint_mse, argnums=(0, 1)))(
      f_t, f_s)
  assert float(jnp.abs(g_t).max()) == 0.0
  np.testing.assert_allclose(g_s, 2 * (f_s - f_t) / f_s.size, rtol=1e-5)
  out = losses_baselines.hint_mse(f_t.astype(jnp.bfloat16),
                                  f_s.astype(jnp.bfloat16))
  assert out.dtype == jnp.float32


@pytest.mark.parametrize('s_shape', [(2, 4, 4, 3), (2, 3, 3, 4),
                                     (1, 3, 3, 3)])
def test_hint_mse_rejects_other_shapes(s_shape):
  """No resizing: the regressor must give exactly the teacher's shape."""
  with pytest.raises(ValueError, match='FitNet hint.*must be equal'):
    losses_baselines.hint_mse(np.zeros((2, 3, 3, 3), np.float32),
                              np.zeros(s_shape, np.float32))


# ------------------------------------------------- FitNet-style fm term


@JIT
def test_feature_mse_same_size_hand_value(jit):
  """Same sizes: plain MSE, [[1,2],[3,4]] vs zeros is (1+4+9+16)/4."""
  got = maybe_jit(losses_baselines.feature_mse, jit)(
      np.zeros((1, 2, 2, 1), np.float32), _MAP_1221)
  np.testing.assert_allclose(got, 7.5, rtol=1e-6)


@JIT
def test_feature_mse_resizes_student(jit):
  """Spatial mismatch: the student is bilinearly resized to the teacher."""
  fn = maybe_jit(losses_baselines.feature_mse, jit)
  # Width 2 -> 4, half-pixel centres at x = -0.25, 0.25, 0.75, 1.25 in the
  # input (edges clamped): [1, 2] becomes [1, 1.25, 1.75, 2].
  f_s = np.array([1., 2.], np.float32).reshape(1, 1, 2, 1)
  f_t = np.zeros((1, 1, 4, 1), np.float32)
  np.testing.assert_allclose(fn(f_t, f_s),
                             (1. + 1.25**2 + 1.75**2 + 4.) / 4., rtol=1e-6)
  # A constant 1x1 student upsampled to 3x3 stays constant.
  f_s = np.full((2, 1, 1, 2), 3., np.float32)
  f_t = rand((2, 3, 3, 2), seed=37)
  np.testing.assert_allclose(fn(f_t, f_s), np.mean((3. - f_t)**2), rtol=1e-5)
  # 2x2 down to 1x1: the centre sample is the mean of the four pixels.
  np.testing.assert_allclose(fn(np.zeros((1, 1, 1, 1), np.float32),
                                _MAP_1221), 2.5**2, rtol=1e-6)


def test_feature_mse_gradient_and_channel_check():
  """FitNet gives f_t no gradient and rejects mismatched channels."""
  f_t = rand((2, 4, 4, 3), seed=38)
  f_s = rand((2, 2, 2, 3), seed=39)
  g_t, g_s = jax.jit(jax.grad(losses_baselines.feature_mse, argnums=(0, 1)))(
      f_t, f_s)
  np.testing.assert_array_equal(g_t, np.zeros_like(f_t))
  assert np.abs(g_s).max() > 1e-4
  with pytest.raises(ValueError, match='Channel mismatch'):
    losses_baselines.feature_mse(f_t, rand((2, 4, 4, 2), seed=40))


# --------------------------------------------------------------------- DKD


def _np_dkd_terms(z_s, z_t, labels, tau):
  """Reference of mdistiller's dkd_loss per example, float64 numpy."""
  z_s, z_t = np.asarray(z_s, np.float64), np.asarray(z_t, np.float64)
  gt = np.eye(z_s.shape[1])[labels]
  p_s, p_t = _np_softmax(z_s / tau), _np_softmax(z_t / tau)
  b_s = np.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], 1)
  b_t = np.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], 1)
  tckd = _np_kl(b_t, b_s) * tau**2
  q_s = _np_softmax(z_s / tau - 1000. * gt)
  q_t = _np_softmax(z_t / tau - 1000. * gt)
  nckd = _np_kl(q_t, q_s) * tau**2
  return tckd, nckd


def _dkd_fixture():
  """2 examples, 3 classes, T = 2, with hand-picked probabilities.

  Logits are 2 log(weights), so at T = 2 the probabilities are the
  normalised weights:
    example 0, label 0: p_s = [1/4, 1/4, 1/2], p_t = [1/2, 1/4, 1/4];
    example 1, label 2: p_s = [1/8, 3/8, 1/2], p_t = [1/4, 1/4, 1/2].
  """
  z_s = 2. * np.log(np.array([[1., 1., 2.], [1., 3., 4.]], np.float32))
  z_t = 2. * np.log(np.array([[2., 1., 1.], [1., 1., 2.]], np.float32))
  return z_s, z_t, np.array([0, 2]), 2.


def _hand_dkd_terms():
  """TCKD_n and NCKD_n of `_dkd_fixture`, by hand (times T^2 = 4).

  Example 0: target/other b_s = [1/4, 3/4], b_t = [1/2, 1/2]; non-target
  (classes 1, 2) q_s = [1/3, 2/3], q_t = [1/2, 1/2].
  Example 1: b_s = b_t = [1/2, 1/2] (TCKD 0); non-target (classes 0, 1)
  q_s = [1/4, 3/4], q_t = [1/2, 1/2].
  """
  tckd = 4. * np.array([
      0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75),
      0.])
  nckd = 4. * np.array([
      0.5 * np.log(0.5 / (1. / 3.)) + 0.5 * np.log(0.5 / (2. / 3.)),
      0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)])
  return tckd, nckd


@JIT
def test_dkd_hand_fixture(jit):
  """TCKD, NCKD and alpha TCKD + beta NCKD match the hand computation."""
  z_s, z_t, labels, tau = _dkd_fixture()
  tckd, nckd = _hand_dkd_terms()
  got_t, got_n = maybe_jit(losses_baselines.dkd_terms, jit,
                            temperature=tau)(z_s, z_t, labels)
  np.testing.assert_allclose(got_t, tckd, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_n, nckd, rtol=1e-5)
  # The numpy re-implementation of mdistiller agrees with the hand values.
  ref_t, ref_n = _np_dkd_terms(z_s, z_t, labels, tau)
  np.testing.assert_allclose(ref_t, tckd, atol=1e-6)
  np.testing.assert_allclose(ref_n, nckd, rtol=1e-6)
  got = maybe_jit(losses_baselines.dkd, jit, alpha=1.5, beta=8.,
                   temperature=tau)(z_s, z_t, labels)
  np.testing.assert_allclose(got, 1.5 * tckd.mean() + 8. * nckd.mean(),
                             rtol=1e-5)


def test_dkd_matches_numpy_reference():
  """dkd on random logits (T = 4, defaults) matches the numpy reference."""
  z_s, z_t = rand((6, 10), 6, 3.), rand((6, 10), 7, 3.)
  labels = np.array([0, 3, 9, 3, 5, 1])
  ref_t, ref_n = _np_dkd_terms(z_s, z_t, labels, 4.)
  np.testing.assert_allclose(
      jax.jit(losses_baselines.dkd)(z_s, z_t, labels),
      1. * ref_t.mean() + 8. * ref_n.mean(), rtol=1e-5)


def test_dkd_zero_when_logits_equal():
  """(a) student == teacher gives TCKD = NCKD = dkd = 0."""
  z = rand((4, 7), 8, 3.)
  labels = np.array([0, 6, 2, 2])
  tckd, nckd = jax.jit(losses_baselines.dkd_terms)(z, z, labels)
  # float32 round-off, amplified by T^2 = 16.
  np.testing.assert_allclose(tckd, 0., atol=1e-5)
  np.testing.assert_allclose(nckd, 0., atol=1e-5)
  np.testing.assert_allclose(jax.jit(losses_baselines.dkd)(z, z, labels),
                             0., atol=1e-5)


def test_dkd_same_target_prob_gives_zero_tckd():
  """(b) Same target probability, permuted non-targets: TCKD 0, NCKD > 0."""
  z_t = np.array([[3., 0., 1., 2.], [0.5, -1., 4., 1.]], np.float32)
  labels = np.array([0, 2])
  # Permuting the non-target logits keeps the target probability.
  z_s = np.array([[3., 2., 0., 1.], [1., 0.5, 4., -1.]], np.float32)
  tckd, nckd = jax.jit(losses_baselines.dkd_terms)(z_s, z_t, labels)
  np.testing.assert_allclose(tckd, 0., atol=1e-6)
  assert np.all(nckd > 1e-3)


def test_dkd_same_non_target_distribution_gives_zero_nckd():
  """(c) Shifted target logit only: NCKD 0, TCKD > 0."""
  z_t = rand((3, 5), 9, 2.)
  labels = np.array([1, 4, 0])
  z_s = z_t.copy()
  z_s[np.arange(3), labels] += np.array([2., -3., 1.5], np.float32)
  tckd, nckd = jax.jit(losses_baselines.dkd_terms)(z_s, z_t, labels)
  np.testing.assert_allclose(nckd, 0., atol=1e-6)
  assert np.all(tckd > 1e-3)


def _kd_from_dkd_terms(z_s, z_t, labels, tau):
  """TCKD + (1 - p_t[label]) NCKD per example (the paper's decomposition)."""
  tckd, nckd = jax.jit(losses_baselines.dkd_terms)(z_s, z_t, labels, tau)
  p_target = _np_softmax(np.asarray(z_t) / tau)[np.arange(len(labels)),
                                                 labels]
  return np.asarray(tckd) + (1. - p_target) * np.asarray(nckd)


@pytest.mark.parametrize('tau', [1., 4.])
def test_dkd_decomposition_recovers_kd(tau):
  """(d) KD T^2 = TCKD + (1 - p_t) NCKD per example; batch mean = kd()."""
  z_s, z_t = rand((5, 6), 10, 3.), rand((5, 6), 11, 3.)
  labels = np.array([0, 5, 2, 2, 3])
  recon = _kd_from_dkd_terms(z_s, z_t, labels, tau)
  per_example_kd = tau**2 * _np_kl(_np_softmax(z_t / tau),
                                   _np_softmax(z_s / tau))
  np.testing.assert_allclose(recon, per_example_kd, rtol=1e-4, atol=1e-6)
  kd = jax.jit(losses.kd)(z_s, z_t, tau)
  np.testing.assert_allclose(recon.mean(), kd, rtol=1e-4)


def test_dkd_gradient_student_only():
  """Student logits get a finite gradient, teacher logits none."""
  z_s, z_t = rand((4, 5), 12, 3.), rand((4, 5), 13, 3.)
  labels = np.array([0, 1, 2, 3])
  g_s, g_t = jax.jit(jax.grad(losses_baselines.dkd, argnums=(0, 1)))(
      z_s, z_t, labels)
  np.testing.assert_array_equal(g_t, np.zeros_like(z_t))
  assert np.all(np.isfinite(g_s)) and np.abs(g_s).max() > 1e-4


def test_dkd_rejects_bad_shapes():
  """Mismatched logits or labels raise ValueErrors."""
  with pytest.raises(ValueError, match='same shape'):
    losses_baselines.dkd(np.zeros((2, 3)), np.zeros((2, 4)),
                         np.zeros(2, int))
  with pytest.raises(ValueError, match='labels'):
    losses_baselines.dkd(np.zeros((2, 3)), np.zeros((2, 3)),
                         np.zeros(3, int))


def test_dkd_warmup_factor():
  """min(epoch / 20, 1): 1/20 at mdistiller's first epoch, 1 from 20 on."""
  for epoch, expected in ((0, 0.), (1, 0.05), (10, 0.5), (20, 1.), (240, 1.)):
    np.testing.assert_allclose(losses_baselines.dkd_warmup_factor(epoch),
                               expected, rtol=1e-6)
  np.testing.assert_allclose(
      jax.jit(losses_baselines.dkd_warmup_factor)(jnp.array(5)), 0.25,
      rtol=1e-6)
  np.testing.assert_allclose(losses_baselines.dkd_warmup_factor(3, 4),
                             0.75, rtol=1e-6)
