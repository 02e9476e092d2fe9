"""Tests for losses/crd.py and methods/crd_heads.py: the CRD loss, memory
bank, negative sampler and embedding heads, against a numpy re-implementation of RepDistiller's crd/."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax.losses import crd
from adain_kd_jax.methods import crd_heads
from tests.conftest import JIT
from tests.conftest import maybe_jit
from tests.conftest import rand

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
  emb_s = _unit_rows(rand((n, dim), seed))
  emb_t = _unit_rows(rand((n, dim), seed + 1))
  idx = np.array([4, 1][:n])
  memory = crd.crd_memory_init(jax.random.key(seed), num_data, dim)
  cidx = np.asarray(crd.crd_sample_contrast(
      jax.random.key(seed + 2), idx, None, num_data, k))
  return emb_s, emb_t, idx, cidx, memory


def test_crd_embed_normalize():
  """Rows are divided by their L2 norm: [3, 4] -> [0.6, 0.8]."""
  x = np.array([[3., 4.], [0., -2.]], np.float32)
  np.testing.assert_allclose(jax.jit(crd.crd_embed_normalize)(x),
                             [[0.6, 0.8], [0., -1.]], rtol=1e-6)


def test_crd_memory_init():
  """Banks of shape (num_data, dim), uniform in [-stdv, stdv], Z unset."""
  mem = crd.crd_memory_init(jax.random.key(0), 500, 12)
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
  _, new = jax.jit(crd.crd_loss)(emb_s, emb_t, idx, cidx, mem)
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
  _, new = jax.jit(crd.crd_loss, static_argnames='momentum')(
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
  fn = maybe_jit(crd.crd_loss, jit, temperature=0.07, momentum=0.5)
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
  step = jax.jit(crd.crd_loss)
  _, mem1 = step(emb_s, emb_t, idx, cidx, mem)
  num_data = mem['memory_s'].shape[0]
  out_s = np.exp(np.einsum('nkd,nd->nk',
                           np.asarray(mem['memory_t'], np.float64)[cidx],
                           emb_s) / 0.07)
  np.testing.assert_allclose(mem1['z_s'], out_s.mean() * num_data,
                             rtol=1e-5)
  assert float(mem1['z_s']) > 0 and float(mem1['z_t']) > 0
  # A second, different batch: Z stays, and the loss uses the stored Z.
  emb_s2 = _unit_rows(rand(emb_s.shape, 10))
  emb_t2 = _unit_rows(rand(emb_t.shape, 11))
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
    return crd.crd_loss(e_s, e_t, idx, cidx, memory)[0]

  mem = jax.tree_util.tree_map(jnp.asarray, mem)
  g_s, g_t, g_mem = jax.jit(jax.grad(loss_fn, argnums=(0, 1, 2)))(
      emb_s, emb_t, mem)
  for g in (g_s, g_t):
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-4
  for key, g in g_mem.items():
    np.testing.assert_array_equal(g, np.zeros_like(g), err_msg=key)
  # Z set from this batch is a constant (`.item()` in the original): the
  # gradient is that of the loss with the same Z passed in as fixed.
  _, mem1 = jax.jit(crd.crd_loss)(emb_s, emb_t, idx, cidx, mem)
  fixed = dict(mem, z_s=mem1['z_s'], z_t=mem1['z_t'])
  g_s_fixed, g_t_fixed = jax.jit(jax.grad(loss_fn, argnums=(0, 1)))(
      emb_s, emb_t, fixed)
  np.testing.assert_allclose(g_s, g_s_fixed, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_t, g_t_fixed, rtol=1e-5, atol=1e-7)


def test_crd_rejects_bad_shapes():
  """Embedding dims, batch sizes and contrast shapes are checked."""
  emb_s, emb_t, idx, cidx, mem = _tiny_crd_case()
  with pytest.raises(ValueError, match='emb_s'):
    crd.crd_loss(emb_s[:, :2], emb_t, idx, cidx, mem)
  with pytest.raises(ValueError, match='Batch mismatch'):
    crd.crd_loss(emb_s, emb_t[:1], idx, cidx, mem)
  with pytest.raises(ValueError, match='contrast_idx'):
    crd.crd_loss(emb_s, emb_t, idx, cidx[:, :1], mem)
  with pytest.raises(ValueError, match='missing keys'):
    crd.crd_loss(emb_s, emb_t, idx, cidx,
                 {'memory_s': mem['memory_s']})


@JIT
def test_crd_contrast_scores_by_hand(jit):
  """exp(m[cidx] @ e / T) / Z; an unset Z becomes mean * num_data."""
  memory = np.array([[1., 0.], [0., 1.], [.6, .8]], np.float32)
  emb = np.array([[1., 0.], [0., 1.]], np.float32)
  cidx = np.array([[0, 1], [1, 2]])
  fn = maybe_jit(crd.crd_contrast_scores, jit, temperature=0.5)
  raw = np.exp(np.array([[1., 0.], [1., .8]]) / 0.5)
  out, z = fn(memory, emb, cidx, np.float32(-1.))
  np.testing.assert_allclose(z, raw.mean() * 3, rtol=1e-6)
  np.testing.assert_allclose(out, raw / (raw.mean() * 3), rtol=1e-6)
  out, z = fn(memory, emb, cidx, np.float32(2.))
  np.testing.assert_allclose(z, 2.)
  np.testing.assert_allclose(out, raw / 2., rtol=1e-6)


def test_crd_memory_rows_by_hand():
  """normalize(m[idx] momentum + e (1 - momentum)), no gradient into e."""
  memory = np.array([[1., 0.], [0., 1.], [-1., 0.]], np.float32)
  emb = np.array([[1., 0.], [0., 1.]], np.float32)
  idx = np.array([2, 0])
  rows = jax.jit(crd.crd_memory_rows, static_argnames='momentum')(
      memory, emb, idx, momentum=0.25)
  # Row 2: .25 [-1, 0] + .75 [1, 0] = [.5, 0]; row 0: [.25, .75].
  np.testing.assert_allclose(
      rows, [[1., 0.], np.array([.25, .75]) / np.sqrt(.625)], rtol=1e-6)
  grad = jax.grad(lambda e: jnp.sum(crd.crd_memory_rows(
      memory, e, idx, 0.25)))(emb)
  np.testing.assert_array_equal(grad, np.zeros_like(emb))


@JIT
def test_crd_sample_contrast_uniform(jit):
  """(N, K+1) int32 indices in range, column 0 = idx."""
  idx = np.array([7, 0, 99, 42])
  fn = maybe_jit(crd.crd_sample_contrast, jit, labels_N=None,
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
    return crd.crd_sample_contrast(rng, i, l, 30, 20, data_labels_M=d)

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
    crd.crd_sample_contrast(jax.random.key(0), np.array([0]),
                            np.array([0]), 30, 21,
                            data_labels_M=data_labels)


def test_crd_heads_embed_and_normalise():
  """Two linear heads (embed_s, embed_t) to `dim`, then unit-norm rows."""
  heads = crd_heads.CRDHeads(dim=8)
  f_s, f_t = rand((3, 5), seed=20), rand((3, 7), seed=21)
  variables = heads.init(jax.random.key(0), f_s, f_t)
  assert set(variables['params']) == {'embed_s', 'embed_t'}
  assert variables['params']['embed_s']['kernel'].shape == (5, 8)
  assert variables['params']['embed_t']['kernel'].shape == (7, 8)
  e_s, e_t = jax.jit(heads.apply)(variables, f_s.astype(jnp.bfloat16), f_t)
  for e in (e_s, e_t):
    assert e.shape == (3, 8) and e.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1., rtol=1e-5)


def test_crd_contrast_scores_match_the_gathered_rows():
  """The scores (and their gradient in emb) equal the former computation,
  exp(memory[contrast_idx] @ emb / T) with the rows gathered, to rounding;
  repeated and positive indices included."""
  memory = rand((300, 16), 0)
  emb = np.asarray(crd.crd_embed_normalize(rand((8, 16), 1)))
  cidx = np.array(jax.random.randint(jax.random.key(2), (8, 65), 0, 300))
  cidx[:, 1] = cidx[:, 0]  # A negative that is the positive.
  weights = rand((8, 65), 3)

  def gathered(e):
    out = jnp.exp(jnp.einsum('nkd,nd->nk', memory[cidx], e) / 0.07)
    return out / (jax.lax.stop_gradient(jnp.mean(out)) * 300)

  def scores(e):
    return crd.crd_contrast_scores(memory, e, cidx, jnp.float32(-1.), 0.07)[0]

  np.testing.assert_allclose(jax.jit(scores)(emb), gathered(emb), rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(jax.grad(lambda e: jnp.sum(scores(e) * weights)))(emb),
      jax.grad(lambda e: jnp.sum(gathered(e) * weights))(emb), rtol=1e-4,
      atol=1e-6)
