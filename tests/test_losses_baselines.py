"""Tests for the AT, FitNet hint, DKD and CRD baseline losses in
adain_kd_jax.losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses

JIT = pytest.mark.parametrize('jit', [False, True], ids=['eager', 'jit'])


def _maybe_jit(fn, jit, **kwargs):
  """Returns `fn`, jitted when `jit` (kwargs are static, bound by closure)."""
  bound = lambda *args: fn(*args, **kwargs)
  return jax.jit(bound) if jit else bound


def _rand(shape, seed, scale=1.0, offset=0.0):
  """Deterministic float32 normal(offset, scale) array."""
  return (offset + scale * np.random.default_rng(seed).normal(size=shape)
          ).astype(np.float32)


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
  a = _maybe_jit(losses.attention_map, jit)(f)
  assert a.shape == (1, 4) and a.dtype == jnp.float32
  np.testing.assert_allclose(a, [[1., 4., 9., 16.]] / np.sqrt(354.),
                             rtol=1e-6)


def test_attention_map_zero_map_is_zero_with_finite_grad():
  """An all-zero map gives a zero attention map (eps clamp), no NaN grad."""
  f = np.zeros((2, 2, 3, 4), np.float32)
  np.testing.assert_array_equal(losses.attention_map(f), np.zeros((2, 6)))
  g = jax.grad(lambda x: jnp.sum(losses.attention_map(x)))(f)
  assert np.all(np.isfinite(g))


@JIT
def test_at_hand_value(jit):
  """One-hot teacher attention [1,0,0,0] vs uniform student [.5]*4: 0.25."""
  f_t = np.zeros((1, 2, 2, 3), np.float32)
  f_t[0, 0, 0, :] = 2.
  f_s = np.ones((1, 2, 2, 5), np.float32)  # Channel counts may differ.
  got = _maybe_jit(losses.at, jit)(f_t, f_s)
  np.testing.assert_allclose(got, 0.25, rtol=1e-6)


def test_at_zero_when_equal_and_matches_numpy():
  """AT is 0 for equal maps and matches a numpy reference otherwise."""
  f_t = _rand((3, 4, 4, 6), seed=0)
  f_s = _rand((3, 4, 4, 2), seed=1, scale=2.)
  fn = jax.jit(losses.at)
  np.testing.assert_allclose(fn(f_t, f_t), 0., atol=1e-9)
  expected = np.mean((_np_attention(f_s) - _np_attention(f_t))**2)
  np.testing.assert_allclose(fn(f_t, f_s), expected, rtol=1e-5)


@pytest.mark.parametrize('student_larger', [True, False])
def test_at_pools_the_larger_map(student_larger):
  """The larger map is average-pooled (features, exactly) to the smaller."""
  big = _rand((2, 8, 4, 3), seed=2)
  small = _rand((2, 4, 2, 5), seed=3)
  if student_larger:
    f_t, f_s = small, big
    expected = np.mean(
        (_np_attention(_np_pool(big, 4, 2)) - _np_attention(small))**2)
  else:
    f_t, f_s = big, small
    expected = np.mean(
        (_np_attention(small) - _np_attention(_np_pool(big, 4, 2)))**2)
  np.testing.assert_allclose(jax.jit(losses.at)(f_t, f_s), expected,
                             rtol=1e-5)


@pytest.mark.parametrize('hw_s, hw_t', [((3, 3), (2, 2)), ((4, 2), (2, 4)),
                                        ((6, 4), (4, 2))])
def test_at_rejects_inexact_resize(hw_s, hw_t):
  """Spatial sizes that do not divide (or cross) raise a ValueError."""
  f_s = np.ones((1, *hw_s, 2), np.float32)
  f_t = np.ones((1, *hw_t, 2), np.float32)
  with pytest.raises(ValueError, match='adaptive-average-pooling'):
    losses.at(f_t, f_s)


def test_at_rejects_batch_mismatch_and_non_4d():
  """Different batch sizes or non-4-D maps raise ValueErrors."""
  with pytest.raises(ValueError, match='Batch mismatch'):
    losses.at(np.ones((2, 2, 2, 1)), np.ones((3, 2, 2, 1)))
  with pytest.raises(ValueError, match='4-D'):
    losses.at(np.ones((2, 2, 2)), np.ones((2, 2, 2, 1)))


def test_at_gradient_student_only():
  """The student map gets a gradient, the teacher map none."""
  f_t = _rand((2, 4, 4, 3), seed=4)
  f_s = _rand((2, 8, 8, 2), seed=5)
  g_t, g_s = jax.jit(jax.grad(losses.at, argnums=(0, 1)))(f_t, f_s)
  np.testing.assert_array_equal(g_t, np.zeros_like(f_t))
  assert np.all(np.isfinite(g_s)) and np.abs(g_s).max() > 1e-6


# ----------------------------------------------------------- FitNet hint


@JIT
def test_hint_mse_zero_when_equal_and_hand_value(jit):
  """0 for the teacher feature itself; mean over (N, H, W, C) otherwise."""
  fn = _maybe_jit(losses.hint_mse, jit)
  f_t = _rand((2, 4, 4, 3), seed=50)
  assert float(fn(f_t, f_t)) == 0.0
  # One element of 24 off by 2: 4 / 24.
  f_s = np.zeros((1, 2, 4, 3), np.float32)
  f_s[0, 1, 2, 0] = 2.0
  np.testing.assert_allclose(fn(np.zeros_like(f_s), f_s), 4.0 / 24, rtol=1e-6)
  np.testing.assert_allclose(fn(f_t, f_t + 0.5), 0.25, rtol=1e-5)


def test_hint_mse_gradient_student_only_and_float32():
  """d/d f_s = 2 (f_s - f_t) / size; no gradient into the teacher feature."""
  f_t, f_s = _rand((2, 3, 3, 2), seed=51), _rand((2, 3, 3, 2), seed=52)
  g_t, g_s = jax.jit(jax.grad(losses.hint_mse, argnums=(0, 1)))(f_t, f_s)
  assert float(jnp.abs(g_t).max()) == 0.0
  np.testing.assert_allclose(g_s, 2 * (f_s - f_t) / f_s.size, rtol=1e-5)
  out = losses.hint_mse(f_t.astype(jnp.bfloat16), f_s.astype(jnp.bfloat16))
  assert out.dtype == jnp.float32


@pytest.mark.parametrize('s_shape', [(2, 4, 4, 3), (2, 3, 3, 4),
                                     (1, 3, 3, 3)])
def test_hint_mse_rejects_other_shapes(s_shape):
  """No resizing: the regressor must give exactly the teacher's shape."""
  with pytest.raises(ValueError, match='FitNet hint.*must be equal'):
    losses.hint_mse(np.zeros((2, 3, 3, 3), np.float32),
                    np.zeros(s_shape, np.float32))


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
  got_t, got_n = _maybe_jit(losses.dkd_terms, jit, temperature=tau)(
      z_s, z_t, labels)
  np.testing.assert_allclose(got_t, tckd, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_n, nckd, rtol=1e-5)
  # The numpy re-implementation of mdistiller agrees with the hand values.
  ref_t, ref_n = _np_dkd_terms(z_s, z_t, labels, tau)
  np.testing.assert_allclose(ref_t, tckd, atol=1e-6)
  np.testing.assert_allclose(ref_n, nckd, rtol=1e-6)
  got = _maybe_jit(losses.dkd, jit, alpha=1.5, beta=8., temperature=tau)(
      z_s, z_t, labels)
  np.testing.assert_allclose(got, 1.5 * tckd.mean() + 8. * nckd.mean(),
                             rtol=1e-5)


def test_dkd_matches_numpy_reference():
  """dkd on random logits (T = 4, defaults) matches the numpy reference."""
  z_s, z_t = _rand((6, 10), 6, 3.), _rand((6, 10), 7, 3.)
  labels = np.array([0, 3, 9, 3, 5, 1])
  ref_t, ref_n = _np_dkd_terms(z_s, z_t, labels, 4.)
  np.testing.assert_allclose(
      jax.jit(losses.dkd)(z_s, z_t, labels),
      1. * ref_t.mean() + 8. * ref_n.mean(), rtol=1e-5)


def test_dkd_zero_when_logits_equal():
  """(a) student == teacher gives TCKD = NCKD = dkd = 0."""
  z = _rand((4, 7), 8, 3.)
  labels = np.array([0, 6, 2, 2])
  tckd, nckd = jax.jit(losses.dkd_terms)(z, z, labels)
  # float32 round-off, amplified by T^2 = 16.
  np.testing.assert_allclose(tckd, 0., atol=1e-5)
  np.testing.assert_allclose(nckd, 0., atol=1e-5)
  np.testing.assert_allclose(jax.jit(losses.dkd)(z, z, labels), 0.,
                             atol=1e-5)


def test_dkd_same_target_prob_gives_zero_tckd():
  """(b) Same target probability, permuted non-targets: TCKD 0, NCKD > 0."""
  z_t = np.array([[3., 0., 1., 2.], [0.5, -1., 4., 1.]], np.float32)
  labels = np.array([0, 2])
  # Permuting the non-target logits keeps the target probability.
  z_s = np.array([[3., 2., 0., 1.], [1., 0.5, 4., -1.]], np.float32)
  tckd, nckd = jax.jit(losses.dkd_terms)(z_s, z_t, labels)
  np.testing.assert_allclose(tckd, 0., atol=1e-6)
  assert np.all(nckd > 1e-3)


def test_dkd_same_non_target_distribution_gives_zero_nckd():
  """(c) Shifted target logit only: NCKD 0, TCKD > 0."""
  z_t = _rand((3, 5), 9, 2.)
  labels = np.array([1, 4, 0])
  z_s = z_t.copy()
  z_s[np.arange(3), labels] += np.array([2., -3., 1.5], np.float32)
  tckd, nckd = jax.jit(losses.dkd_terms)(z_s, z_t, labels)
  np.testing.assert_allclose(nckd, 0., atol=1e-6)
  assert np.all(tckd > 1e-3)


def _kd_from_dkd_terms(z_s, z_t, labels, tau):
  """TCKD + (1 - p_t[label]) NCKD per example (the paper's decomposition)."""
  tckd, nckd = jax.jit(losses.dkd_terms)(z_s, z_t, labels, tau)
  p_target = _np_softmax(np.asarray(z_t) / tau)[np.arange(len(labels)),
                                                 labels]
  return np.asarray(tckd) + (1. - p_target) * np.asarray(nckd)


@pytest.mark.parametrize('tau', [1., 4.])
def test_dkd_decomposition_recovers_kd(tau):
  """(d) KD T^2 = TCKD + (1 - p_t) NCKD per example; batch mean = kd()."""
  z_s, z_t = _rand((5, 6), 10, 3.), _rand((5, 6), 11, 3.)
  labels = np.array([0, 5, 2, 2, 3])
  recon = _kd_from_dkd_terms(z_s, z_t, labels, tau)
  per_example_kd = tau**2 * _np_kl(_np_softmax(z_t / tau),
                                   _np_softmax(z_s / tau))
  np.testing.assert_allclose(recon, per_example_kd, rtol=1e-4, atol=1e-6)
  kd = jax.jit(losses.kd)(z_s, z_t, tau)
  np.testing.assert_allclose(recon.mean(), kd, rtol=1e-4)


def test_dkd_gradient_student_only():
  """Student logits get a finite gradient, teacher logits none."""
  z_s, z_t = _rand((4, 5), 12, 3.), _rand((4, 5), 13, 3.)
  labels = np.array([0, 1, 2, 3])
  g_s, g_t = jax.jit(jax.grad(losses.dkd, argnums=(0, 1)))(z_s, z_t, labels)
  np.testing.assert_array_equal(g_t, np.zeros_like(z_t))
  assert np.all(np.isfinite(g_s)) and np.abs(g_s).max() > 1e-4


def test_dkd_rejects_bad_shapes():
  """Mismatched logits or labels raise ValueErrors."""
  with pytest.raises(ValueError, match='same shape'):
    losses.dkd(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2, int))
  with pytest.raises(ValueError, match='labels'):
    losses.dkd(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3, int))


def test_dkd_warmup_factor():
  """min(epoch / 20, 1): 1/20 at mdistiller's first epoch, 1 from 20 on."""
  for epoch, expected in ((0, 0.), (1, 0.05), (10, 0.5), (20, 1.), (240, 1.)):
    np.testing.assert_allclose(losses.dkd_warmup_factor(epoch), expected,
                               rtol=1e-6)
  np.testing.assert_allclose(
      jax.jit(losses.dkd_warmup_factor)(jnp.array(5)), 0.25, rtol=1e-6)
  np.testing.assert_allclose(losses.dkd_warmup_factor(3, 4), 0.75,
                             rtol=1e-6)


# --------------------------------------------------------------------- CRD


def _np_contrast_loss(x, num_data, eps=1e-7):
  """Reference RepDistiller ContrastLoss, float64 numpy."""
  x = np.asarray(x, np.float64)
  m = x.shape[1] - 1
  pn = 1. / num_data
  log_d1 = np.log(x[:, 0] / (x[:, 0] + m * pn + eps))
  log_d0 = np.log(m * pn / (x[:, 1:] + m * pn + eps))
  return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


def _np_crd(emb_s, emb_t, idx, cidx, mem, tau=0.07, momentum=0.5):
  """Reference ContrastMemory.forward + CRDLoss in float64 numpy."""
  mem_s = np.asarray(mem['memory_s'], np.float64)
  mem_t = np.asarray(mem['memory_t'], np.float64)
  num_data = mem_s.shape[0]
  emb_s = np.asarray(emb_s, np.float64)
  emb_t = np.asarray(emb_t, np.float64)
  out_s = np.exp(np.einsum('nkd,nd->nk', mem_t[cidx], emb_s) / tau)
  out_t = np.exp(np.einsum('nkd,nd->nk', mem_s[cidx], emb_t) / tau)
  z_s, z_t = float(mem['z_s']), float(mem['z_t'])
  if z_s <= 0:
    z_s = out_s.mean() * num_data
  if z_t <= 0:
    z_t = out_t.mean() * num_data
  loss = (_np_contrast_loss(out_s / z_s, num_data)
          + _np_contrast_loss(out_t / z_t, num_data))
  new = {'z_s': z_s, 'z_t': z_t}
  for key, m, e in (('memory_s', mem_s, emb_s), ('memory_t', mem_t, emb_t)):
    m = m.copy()
    pos = m[idx] * momentum + e * (1 - momentum)
    m[idx] = pos / np.linalg.norm(pos, axis=1, keepdims=True)
    new[key] = m
  return loss, new


def _unit_rows(x):
  """Rows of x scaled to unit L2 norm (float32)."""
  x = np.asarray(x, np.float64)
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _tiny_crd_case(seed=0, num_data=6, dim=3, n=2, k=3):
  """Random unit embeddings, memory from crd_memory_init, contrast indices."""
  emb_s = _unit_rows(_rand((n, dim), seed))
  emb_t = _unit_rows(_rand((n, dim), seed + 1))
  idx = np.array([4, 1][:n])
  memory = losses.crd_memory_init(jax.random.key(seed), num_data, dim)
  cidx = np.asarray(losses.crd_sample_contrast(
      jax.random.key(seed + 2), idx, None, num_data, k))
  return emb_s, emb_t, idx, cidx, memory


def test_crd_embed_normalize():
  """Rows are divided by their L2 norm: [3, 4] -> [0.6, 0.8]."""
  x = np.array([[3., 4.], [0., -2.]], np.float32)
  np.testing.assert_allclose(jax.jit(losses.crd_embed_normalize)(x),
                             [[0.6, 0.8], [0., -1.]], rtol=1e-6)


def test_crd_memory_init():
  """Banks of shape (num_data, dim), uniform in [-stdv, stdv], Z unset."""
  mem = losses.crd_memory_init(jax.random.key(0), 500, 12)
  stdv = 1. / np.sqrt(12 / 3)
  for key in ('memory_s', 'memory_t'):
    assert mem[key].shape == (500, 12) and mem[key].dtype == jnp.float32
    assert np.all(np.abs(mem[key]) <= stdv)
    assert np.abs(mem[key]).max() > 0.9 * stdv  # Really spans the range.
    np.testing.assert_allclose(np.mean(mem[key]), 0., atol=0.02)
  assert not np.allclose(mem['memory_s'], mem['memory_t'])
  assert float(mem['z_s']) <= 0 and float(mem['z_t']) <= 0


def test_crd_memory_update_by_hand():
  """num_data=4, dim=2, momentum 0.5: rows idx = normalize(m/2 + v/2)."""
  mem = {
      'memory_s': np.array([[1., 0.], [0., 1.], [.6, .8], [-1., 0.]],
                           np.float32),
      'memory_t': np.array([[0., 1.], [1., 0.], [0., -1.], [.8, .6]],
                           np.float32),
      'z_s': np.float32(-1.), 'z_t': np.float32(-1.),
  }
  idx = np.array([1, 3])
  emb_s = np.array([[1., 0.], [0., 1.]], np.float32)
  emb_t = np.array([[0., 1.], [.8, .6]], np.float32)
  cidx = np.array([[1, 0], [3, 2]])
  _, new = jax.jit(losses.crd_loss)(emb_s, emb_t, idx, cidx, mem)
  new = jax.tree_util.tree_map(np.asarray, new)
  r = 1. / np.sqrt(2.)
  # memory_s row 1: [0, 1]/2 + [1, 0]/2 = [.5, .5] -> [r, r];
  # row 3: [-1, 0]/2 + [0, 1]/2 = [-.5, .5] -> [-r, r].
  np.testing.assert_allclose(
      new['memory_s'], [[1., 0.], [r, r], [.6, .8], [-r, r]], rtol=1e-6)
  # memory_t row 1: [1, 0]/2 + [0, 1]/2 -> [r, r]; row 3: [.8, .6] stays.
  np.testing.assert_allclose(
      new['memory_t'], [[0., 1.], [r, r], [0., -1.], [.8, .6]], rtol=1e-6)
  assert new['memory_s'].dtype == jnp.float32


def test_crd_memory_update_teacher_bank_by_hand():
  """The teacher bank is updated with the teacher embeddings."""
  mem = {
      'memory_s': np.zeros((4, 2), np.float32) + .5,
      'memory_t': np.array([[0., 1.], [1., 0.], [0., -1.], [.6, .8]],
                           np.float32),
      'z_s': np.float32(-1.), 'z_t': np.float32(-1.),
  }
  idx = np.array([2, 0])
  emb_t = np.array([[1., 0.], [1., 0.]], np.float32)
  emb_s = np.array([[0., 1.], [1., 0.]], np.float32)
  _, new = jax.jit(losses.crd_loss, static_argnames='momentum')(
      emb_s, emb_t, idx, np.array([[2, 1], [0, 3]]), mem, momentum=0.75)
  new = jax.tree_util.tree_map(np.asarray, new)
  # Row 2: .75 [0, -1] + .25 [1, 0] = [.25, -.75] -> /sqrt(.625).
  # Row 0: .75 [0, 1] + .25 [1, 0] = [.25, .75] -> /sqrt(.625).
  s = np.sqrt(.625)
  np.testing.assert_allclose(
      new['memory_t'],
      [[.25 / s, .75 / s], [1., 0.], [.25 / s, -.75 / s], [.6, .8]],
      rtol=1e-6)
  # Student bank rows 2, 0: .75 [.5, .5] + .25 emb_s -> normalised.
  row2 = np.array([.375, .625]) / np.linalg.norm([.375, .625])
  row0 = np.array([.625, .375]) / np.linalg.norm([.625, .375])
  np.testing.assert_allclose(new['memory_s'][[2, 0]], [row2, row0],
                             rtol=1e-6)
  np.testing.assert_allclose(new['memory_s'][[1, 3]], .5)


@JIT
def test_crd_loss_matches_numpy(jit):
  """Loss, Z and memory of one call match the numpy re-implementation."""
  emb_s, emb_t, idx, cidx, mem = _tiny_crd_case()
  fn = _maybe_jit(losses.crd_loss, jit, temperature=0.07, momentum=0.5)
  loss, new = fn(emb_s, emb_t, idx, cidx, mem)
  ref_loss, ref_new = _np_crd(emb_s, emb_t, idx, cidx, mem)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for key in ('z_s', 'z_t'):
    np.testing.assert_allclose(new[key], ref_new[key], rtol=1e-5)
  for key in ('memory_s', 'memory_t'):
    np.testing.assert_allclose(new[key], ref_new[key], rtol=1e-5,
                               atol=1e-6)


def test_crd_z_fixed_after_first_call():
  """Z is estimated on the first batch, then kept and reused."""
  emb_s, emb_t, idx, cidx, mem = _tiny_crd_case(seed=3)
  step = jax.jit(losses.crd_loss)
  _, mem1 = step(emb_s, emb_t, idx, cidx, mem)
  num_data = mem['memory_s'].shape[0]
  out_s = np.exp(np.einsum('nkd,nd->nk',
                           np.asarray(mem['memory_t'], np.float64)[cidx],
                           emb_s) / 0.07)
  np.testing.assert_allclose(mem1['z_s'], out_s.mean() * num_data,
                             rtol=1e-5)
  assert float(mem1['z_s']) > 0 and float(mem1['z_t']) > 0
  # A second, different batch: Z stays, and the loss uses the stored Z.
  emb_s2 = _unit_rows(_rand(emb_s.shape, 10))
  emb_t2 = _unit_rows(_rand(emb_t.shape, 11))
  loss2, mem2 = step(emb_s2, emb_t2, idx, cidx, mem1)
  np.testing.assert_array_equal(mem2['z_s'], mem1['z_s'])
  np.testing.assert_array_equal(mem2['z_t'], mem1['z_t'])
  ref_loss2, _ = _np_crd(emb_s2, emb_t2, idx, cidx, mem1)
  np.testing.assert_allclose(loss2, ref_loss2, rtol=1e-5)
  # Re-estimating Z on the second batch would give a different loss.
  unset = dict(mem1, z_s=np.float32(-1.), z_t=np.float32(-1.))
  loss2_reset, _ = step(emb_s2, emb_t2, idx, cidx, unset)
  assert abs(float(loss2_reset) - float(loss2)) > 1e-4


def test_crd_gradients_reach_embeddings_not_memory():
  """emb_s and emb_t get gradients; the memory (and Z) none."""
  emb_s, emb_t, idx, cidx, mem = _tiny_crd_case(seed=5)

  def loss_fn(e_s, e_t, memory):
    return losses.crd_loss(e_s, e_t, idx, cidx, memory)[0]

  mem = jax.tree_util.tree_map(jnp.asarray, mem)
  g_s, g_t, g_mem = jax.jit(jax.grad(loss_fn, argnums=(0, 1, 2)))(
      emb_s, emb_t, mem)
  for g in (g_s, g_t):
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4
  for key, g in g_mem.items():
    np.testing.assert_array_equal(g, np.zeros_like(g), err_msg=key)
  # Z set from this batch is a constant (`.item()` in the original): the
  # gradient is that of the loss with the same Z passed in as fixed.
  _, mem1 = jax.jit(losses.crd_loss)(emb_s, emb_t, idx, cidx, mem)
  fixed = dict(mem, z_s=mem1['z_s'], z_t=mem1['z_t'])
  g_s_fixed, g_t_fixed = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(
      emb_s, emb_t, fixed)
  np.testing.assert_allclose(g_s, g_s_fixed, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_t, g_t_fixed, rtol=1e-5, atol=1e-7)


def test_crd_rejects_bad_shapes():
  """Embedding dims, batch sizes and contrast shapes are checked."""
  emb_s, emb_t, idx, cidx, mem = _tiny_crd_case()
  with pytest.raises(ValueError, match='emb_s'):
    losses.crd_loss(emb_s[:, :2], emb_t, idx, cidx, mem)
  with pytest.raises(ValueError, match='Batch mismatch'):
    losses.crd_loss(emb_s, emb_t[:1], idx, cidx, mem)
  with pytest.raises(ValueError, match='contrast_idx'):
    losses.crd_loss(emb_s, emb_t, idx, cidx[:, :1], mem)
  with pytest.raises(ValueError, match='missing keys'):
    losses.crd_loss(emb_s, emb_t, idx, cidx,
                    {'memory_s': mem['memory_s']})


@JIT
def test_crd_sample_contrast_uniform(jit):
  """(N, K+1) int32 indices in range, column 0 = idx."""
  idx = np.array([7, 0, 99, 42])
  fn = _maybe_jit(losses.crd_sample_contrast, jit, labels_N=None,
                  num_data=100, num_negatives=64)
  out = np.asarray(fn(jax.random.key(0), idx))
  assert out.shape == (4, 65) and out.dtype == np.int32
  np.testing.assert_array_equal(out[:, 0], idx)
  assert out.min() >= 0 and out.max() < 100
  assert len(np.unique(out[:, 1:])) > 30  # Not a constant draw.


@JIT
def test_crd_sample_contrast_class_aware(jit):
  """With dataset labels: negatives from other classes, no repeats."""
  data_labels = np.arange(30) % 3
  idx = np.array([0, 4, 29])
  labels = data_labels[idx]

  def sample(rng, i, l, d):
    return losses.crd_sample_contrast(rng, i, l, 30, 20, data_labels_M=d)

  fn = jax.jit(sample) if jit else sample
  out = np.asarray(fn(jax.random.key(1), idx, labels, data_labels))
  assert out.shape == (3, 21)
  np.testing.assert_array_equal(out[:, 0], idx)
  for row, label in zip(out, labels):
    assert np.all(data_labels[row[1:]] != label)
    assert len(np.unique(row[1:])) == 20  # All 20 other-class examples.


def test_crd_sample_contrast_rejects_too_many_negatives():
  """More negatives than other-class examples raises (eagerly)."""
  data_labels = np.arange(30) % 3
  with pytest.raises(ValueError, match='other-class'):
    losses.crd_sample_contrast(jax.random.key(0), np.array([0]),
                               np.array([0]), 30, 21,
                               data_labels_M=data_labels)
