"""SP, CC, RKD, PKT, NST (RepDistiller) and DIST (its authors' code): each
loss and its gradient against a float64 numpy port of the reference code,
the terms' features and heads, and a few training steps of each method."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import cc_heads
from adain_kd_jax.methods import objective
from configs import smoke
from tests.conftest import build_tiny_step
from tests.conftest import make_teacher_variables
from tests.conftest import one_step
from tests.conftest import term_inputs

IMAGE_SHAPE = (28, 28, 1)
# The zoo's shapes (N = 16): wrn_40_2 -> wrn_16_2's last stage outputs, and
# resnet32x4 -> resnet8x4's pooled features.
MAPS = ((16, 8, 8, 64), (16, 8, 8, 128))
POOLED = ((16, 256), (16, 256))


# --- float64 numpy ports of RepDistiller's distiller_zoo (NCHW) -------------

def _np_normalize(x, axis, eps=1e-12):
  """torch's F.normalize."""
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def _np_sp(f_s, f_t):
  """SP.py, similarity_loss, on NCHW maps."""
  bsz = f_s.shape[0]
  f_s, f_t = f_s.reshape(bsz, -1), f_t.reshape(bsz, -1)
  g_s = _np_normalize(f_s @ f_s.T, 1)
  g_t = _np_normalize(f_t @ f_t.T, 1)
  return np.sum((g_t - g_s) ** 2) / (bsz * bsz)


def _np_cc(f_s, f_t):
  """CC.py, Correlation.forward."""
  delta = np.abs(f_s - f_t)
  return np.mean((delta[:-1] * delta[1:]).sum(1))


def _np_pdist(e, eps=1e-12):
  """RKD.py, RKDLoss.pdist (not squared)."""
  e_square = (e ** 2).sum(1)
  res = np.maximum(e_square[:, None] + e_square[None, :] - 2 * e @ e.T, eps)
  res = np.sqrt(res)
  res[range(len(e)), range(len(e))] = 0
  return res


def _np_smooth_l1(a, b):
  d = np.abs(a - b)
  return np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5))


def _np_rkd(f_s, f_t, w_d=25.0, w_a=50.0):
  """RKD.py, RKDLoss.forward."""
  student, teacher = f_s.reshape(len(f_s), -1), f_t.reshape(len(f_t), -1)
  t_d = _np_pdist(teacher)
  t_d = t_d / t_d[t_d > 0].mean()
  d = _np_pdist(student)
  d = d / d[d > 0].mean()
  loss_d = _np_smooth_l1(d, t_d)
  td = teacher[None] - teacher[:, None]
  norm_td = _np_normalize(td, 2)
  t_angle = np.matmul(norm_td, norm_td.transpose(0, 2, 1)).reshape(-1)
  sd = student[None] - student[:, None]
  norm_sd = _np_normalize(sd, 2)
  s_angle = np.matmul(norm_sd, norm_sd.transpose(0, 2, 1)).reshape(-1)
  loss_a = _np_smooth_l1(s_angle, t_angle)
  return w_d * loss_d + w_a * loss_a


def _np_pkt(output_net, target_net, eps=1e-7):
  """PKT.py, cosine_similarity_loss."""
  output_net = output_net / (np.sqrt((output_net ** 2).sum(1, keepdims=True))
                             + eps)
  target_net = target_net / (np.sqrt((target_net ** 2).sum(1, keepdims=True))
                             + eps)
  model_similarity = (output_net @ output_net.T + 1.0) / 2.0
  target_similarity = (target_net @ target_net.T + 1.0) / 2.0
  model_similarity /= model_similarity.sum(1, keepdims=True)
  target_similarity /= target_similarity.sum(1, keepdims=True)
  return np.mean(target_similarity * np.log(
      (target_similarity + eps) / (model_similarity + eps)))


def _np_adaptive_pool(f, out):
  """torch's adaptive_avg_pool2d of NCHW to (out, out)."""
  n, c, h, w = f.shape
  res = np.zeros((n, c, out, out))
  for i in range(out):
    h0, h1 = (i * h) // out, -(-(i + 1) * h // out)
    for j in range(out):
      w0, w1 = (j * w) // out, -(-(j + 1) * w // out)
      res[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
  return res


def _np_poly_kernel(a, b):
  return ((a[:, None] * b[:, :, None]).sum(-1)) ** 2


def _np_nst(f_s, f_t):
  """NST.py, nst_loss (full_loss), on NCHW maps."""
  s_h, t_h = f_s.shape[2], f_t.shape[2]
  if s_h > t_h:
    f_s = _np_adaptive_pool(f_s, t_h)
  elif s_h < t_h:
    f_t = _np_adaptive_pool(f_t, s_h)
  f_s = _np_normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), 2)
  f_t = _np_normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), 2)
  return (_np_poly_kernel(f_t, f_t).mean() + _np_poly_kernel(f_s, f_s).mean()
          - 2 * _np_poly_kernel(f_s, f_t).mean())


def _np_softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def _np_inter(y_s, y_t, eps=1e-8):
  """dist_kd.py: 1 - mean pearson_correlation of rows."""
  a = y_s - y_s.mean(1)[:, None]
  b = y_t - y_t.mean(1)[:, None]
  cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) *
                          np.linalg.norm(b, axis=1) + eps)
  return 1 - cos.mean()


def _np_dist(z_s, z_t, beta=1.0, gamma=1.0, tau=4.0):
  """dist_kd.py, DIST.forward (tau 4: the CIFAR-100 recipe's dist_t4)."""
  y_s, y_t = _np_softmax(z_s / tau), _np_softmax(z_t / tau)
  return (beta * tau ** 2 * _np_inter(y_s, y_t) +
          gamma * tau ** 2 * _np_inter(y_s.T, y_t.T))


def _nchw(f):
  return np.transpose(f, (0, 3, 1, 2)) if f.ndim == 4 else f


# name: (JAX loss, numpy reference on torch's layout, shapes, a ReLU'd input).
CASES = {
    'sp': (losses.sp_loss, lambda s, t: _np_sp(_nchw(s), _nchw(t)), MAPS),
    'cc': (losses.cc_loss, _np_cc, ((16, 128), (16, 128))),
    'rkd': (losses.rkd_loss, _np_rkd, POOLED),
    'pkt': (losses.pkt_loss, _np_pkt, POOLED),
    # The zoo's 16x16 and 8x8 stage sizes (the student's map is pooled),
    # with fewer channels (16, 32) to keep the numpy kernel fast.
    'nst': (losses.nst_loss, lambda s, t: _np_nst(_nchw(s), _nchw(t)),
            ((8, 16, 16, 16), (8, 8, 8, 32))),
    'dist': (lambda s, t: losses.dist_loss(s, t, temperature=4.0), _np_dist,
             ((16, 100), (16, 100))),
}


def _inputs(shapes, seed):
  rng = np.random.default_rng(seed)
  return [np.maximum(rng.normal(size=s), 0.0) + 0.1 * rng.normal(size=s)
          for s in shapes]


def test_nst_at_equal_sizes_and_dist_parts():
  """NST with no pooling (wrn_16_2 -> wrn_40_2's last stage) against the
  port; DIST's inter and intra parts weighted as the reference."""
  f_s, f_t = _inputs(((8, 8, 8, 32), (8, 8, 8, 128)), 4)
  np.testing.assert_allclose(losses.nst_loss(f_s, f_t),
                             _np_nst(_nchw(f_s), _nchw(f_t)), rtol=1e-4)
  z_s, z_t = (3 * z for z in _inputs(((16, 100), (16, 100)), 5))
  inter, intra = losses.dist_relations(z_s, z_t, 4.0)
  np.testing.assert_allclose(
      2.0 * inter + 0.5 * intra, _np_dist(z_s, z_t, 2.0, 0.5), rtol=1e-4)


@pytest.mark.parametrize('name', list(CASES))
def test_loss_matches_the_float64_reference(name):
  """float64 in: the reference's value to float64 rounding; float32 in:
  to float32's."""
  fn, ref, shapes = CASES[name]
  f_s, f_t = _inputs(shapes, 0)
  expected = ref(f_s, f_t)
  with jax.enable_x64():
    got64 = jax.jit(fn)(jnp.asarray(f_s), jnp.asarray(f_t))
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(got64, expected, rtol=1e-12)
  got32 = jax.jit(fn)(f_s.astype(np.float32), f_t.astype(np.float32))
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, expected, rtol=2e-4)


@pytest.mark.parametrize('name', list(CASES))
def test_gradient_matches_the_float64_reference(name):
  """The float64 gradient in three random directions against central
  differences of the numpy reference (step 1e-5: error ~1e-10); the
  teacher's side gets no gradient where the reference has none."""
  fn, ref, shapes = CASES[name]
  f_s, f_t = _inputs(shapes, 1)
  rng = np.random.default_rng(2)
  with jax.enable_x64():
    g_s, g_t = jax.grad(fn, argnums=(0, 1))(jnp.asarray(f_s),
                                            jnp.asarray(f_t))
  g_s, g_t = np.asarray(g_s), np.asarray(g_t)
  trains_teacher_side = name == 'cc'  # Its heads are both trained.
  if not trains_teacher_side:
    assert not np.any(g_t)
  h = 1e-5
  for _ in range(3):
    v_s = rng.normal(size=f_s.shape)
    v_t = rng.normal(size=f_t.shape) if trains_teacher_side else 0 * f_t
    numeric = (ref(f_s + h * v_s, f_t + h * v_t) -
               ref(f_s - h * v_s, f_t - h * v_t)) / (2 * h)
    analytic = np.sum(g_s * v_s) + np.sum(g_t * v_t)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7,
                               atol=1e-9 * abs(numeric) + 1e-12)


def test_rkd_weights_and_identical_inputs():
  """RKD of a batch with itself is 0; each part scales by its weight."""
  f_s, f_t = _inputs(POOLED, 3)
  assert float(losses.rkd_loss(f_s, f_s)) == pytest.approx(0.0, abs=1e-6)
  both = _np_rkd(f_s, f_t, 2.0, 3.0)
  np.testing.assert_allclose(
      losses.rkd_loss(f_s, f_t, 2.0, 0.0) +
      losses.rkd_loss(f_s, f_t, 0.0, 3.0), both, rtol=1e-5)


def test_bad_shapes_raise():
  """Mismatched batches name the method."""
  with pytest.raises(ValueError, match='SP'):
    losses.sp_loss(np.ones((4, 2, 2, 3)), np.ones((5, 2, 2, 3)))
  with pytest.raises(ValueError, match='CC'):
    losses.cc_loss(np.ones((4, 8)), np.ones((4, 9)))
  with pytest.raises(ValueError, match='RKD'):
    losses.rkd_loss(np.ones((4, 8)), np.ones((3, 8)))
  with pytest.raises(ValueError, match='PKT'):
    losses.pkt_loss(np.ones((4, 8)), np.ones((3, 8)))
  with pytest.raises(ValueError, match='NST'):
    losses.nst_loss(np.ones((4, 2, 2, 3)), np.ones((3, 2, 2, 3)))
  with pytest.raises(ValueError, match='DIST'):
    losses.dist_loss(np.ones((4, 10)), np.ones((4, 11)))


def test_cc_heads_are_torch_linear_layers():
  """Two dense layers with bias, U(+-1/sqrt(fan_in)) init, no normalisation."""
  heads = cc_heads.CCHeads(dim=16)
  f_s, f_t = np.ones((3, 64), np.float32), np.ones((3, 256), np.float32)
  params = heads.init(jax.random.key(0), f_s, f_t)['params']
  for name, fan_in in (('embed_s', 64), ('embed_t', 256)):
    for leaf in (params[name]['kernel'], params[name]['bias']):
      assert np.max(np.abs(leaf)) <= 1 / np.sqrt(fan_in)
    assert params[name]['kernel'].shape == (fan_in, 16)
  e_s, e_t = heads.apply({'params': params}, f_s, f_t)
  np.testing.assert_allclose(
      e_s, f_s @ params['embed_s']['kernel'] + params['embed_s']['bias'],
      rtol=1e-5)
  assert e_t.shape == (3, 16)


def _config(method):
  config = smoke.get_config()
  config.update(model='resnet8', teacher='resnet8', method=method)
  return config


def test_bad_settings_name_the_field():
  """config.cc.dim and config.rkd's weights are checked with the field."""
  config = _config('cc')
  config.cc.dim = 0
  with pytest.raises(ValueError, match=r'config.cc.dim=0'):
    objective.create(config, 10, IMAGE_SHAPE)
  config = _config('rkd')
  config.rkd.angle_weight = -1.0
  with pytest.raises(ValueError, match=r'config.rkd.angle_weight=-1.0'):
    objective.create(config, 10, IMAGE_SHAPE)
  config = _config('dist')
  config.dist.temperature = 0.0
  with pytest.raises(ValueError, match=r'config.dist.temperature=0.0'):
    objective.create(config, 10, IMAGE_SHAPE)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32),
          'index': rng.permutation(64)[:16].astype(np.int32)}


@pytest.mark.parametrize('method', list(CASES))
def test_term_reads_the_references_features(method):
  """The term's metric is the reference loss on the features RepDistiller
  gives it: SP the last stage maps, RKD and PKT the pooled features, CC the
  pooled features through its heads, NST every stage (summed), DIST the
  logits at tau 4."""
  distiller = objective.create(_config(method), 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [
      ('ce', 1.0), (method, float(_config(method).loss[method]))]
  got = term_inputs(distiller, _batch(0))
  variables, teacher_vars, images, metrics, f_s, f_t = (
      got[k] for k in ('variables', 'teacher_vars', 'images', 'metrics',
                       'f_s', 'f_t'))
  ref = CASES[method][1]
  f64 = lambda x: np.asarray(x, np.float64)
  if method == 'sp':
    expected = ref(f64(f_s['stage3']), f64(f_t['stage3']))
  elif method == 'cc':
    e_s, e_t = distiller.adapter('cc').apply(
        {'params': variables['params']['cc']}, f_s['pre_logits'],
        f_t['pre_logits'])
    expected = ref(f64(e_s), f64(e_t))
  elif method == 'nst':
    expected = sum(ref(f64(f_s[f'stage{k}']), f64(f_t[f'stage{k}']))
                   for k in (1, 2, 3))
  elif method == 'dist':
    logits_s = distiller.student.apply(
        {'params': variables['params']['student'],
         'batch_stats': variables['batch_stats']['student']},
        images, train=True, mutable=['batch_stats'])[0][0]
    logits_t = distiller.teacher.apply(teacher_vars, images, train=False)[0]
    expected = ref(f64(logits_s), f64(logits_t))
  else:
    expected = ref(f64(f_s['pre_logits']), f64(f_t['pre_logits']))
  # PKT starts near 0 (a KL of nearly equal rows): float32 cancellation.
  np.testing.assert_allclose(metrics[method], expected, rtol=2e-4, atol=1e-8)


@pytest.mark.parametrize('method', list(CASES))
def test_method_trains_a_few_steps(method):
  """Four jitted steps on a repeated batch: finite, the term goes down (CC:
  its heads move too)."""
  config = _config(method)
  parts = build_tiny_step(config, IMAGE_SHAPE)
  state = parts.init_state(jax.random.key(0))
  p_train_step = one_step(parts.multi_step)
  teacher_vars = make_teacher_variables()
  before = jax.device_get(state.params.get('cc'))
  values, totals = [], []
  for _ in range(4):
    state, metrics = p_train_step(state, teacher_vars, _batch(1))
    values.append(float(jax.device_get(metrics[method])))
    totals.append(float(jax.device_get(metrics['loss'])))
  assert np.all(np.isfinite(values + totals)), (values, totals)
  assert values[-1] < values[0], values
  if method == 'cc':
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                         jax.device_get(state.params['cc']))
    assert all(jax.tree.leaves(moved))
