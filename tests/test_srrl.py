"""SRRL (SimKD's code of its CIFAR-100 numbers): the connector and the loss,
value and gradient, against a float64 numpy port of the reference; the
term's inputs, its connector on every CIFAR-100 pair, and a few training
steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import objective
from adain_kd_jax.methods import srrl_connector
from adain_kd_jax.training import config_checks
from configs import cifar100_distill
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import train_a_few_steps
from tests.conftest import trace_loss

# A student narrower than its teacher, as the zoo's pooled widths
# (resnet20's 64 -> wrn_40_2's 128), 100 classes (CIFAR-100), batch 16.
N, D_S, D_T, K = 16, 64, 128, 100


# --- float64 numpy port of SimKD's SRRL module and its loss ----------------

def _np_srrl(f_s, w_conv, gamma, beta, f_t, w_fc, b_fc, z_t, eps=1e-5):
  """models/util.py SRRL.forward (conv1x1 + BatchNorm2d in training mode +
  ReLU on the (N, D_s, 1, 1) feature, then the teacher's fc) and
  loops.py's `criterion_kd(trans_feat_s, feat_t[-1]) +
  criterion_kd(pred_feat_s, logit_t)` with nn.MSELoss."""
  x = f_s @ w_conv.T  # conv weight (D_t, D_s, 1, 1) on a 1x1 map.
  mean = x.mean(0)
  var = ((x - mean) ** 2).mean(0)  # BatchNorm's biased batch variance.
  x = np.maximum((x - mean) / np.sqrt(var + eps) * gamma + beta, 0.0)
  pred = x @ w_fc.T + b_fc
  return np.mean((x - f_t) ** 2) + np.mean((pred - z_t) ** 2)


def _setup(seed):
  rng = np.random.default_rng(seed)
  return dict(
      f_s=np.maximum(rng.normal(size=(N, D_S)), 0.0),
      w_conv=rng.normal(size=(D_T, D_S)) / np.sqrt(D_S),
      gamma=rng.uniform(0.5, 1.5, D_T), beta=rng.normal(0, 0.1, D_T),
      f_t=np.maximum(rng.normal(size=(N, D_T)), 0.0),
      w_fc=rng.normal(size=(K, D_T)) / np.sqrt(D_T),
      b_fc=rng.normal(0, 0.1, K), z_t=3 * rng.normal(size=(N, K)))


def _jax_srrl(f_s, a):
  """The connector (train mode) and losses.srrl_loss, weights from `a`."""
  conn = srrl_connector.SRRLConnector(D_T, dtype=f_s.dtype)
  variables = {'params': {'conv': {'kernel': jnp.asarray(a['w_conv'].T)},
                          'bn': {'scale': jnp.asarray(a['gamma']),
                                 'bias': jnp.asarray(a['beta'])}},
               'batch_stats': {'bn': {'mean': jnp.zeros(D_T),
                                      'var': jnp.ones(D_T)}}}
  e_s, _ = conn.apply(variables, f_s, train=True, mutable=['batch_stats'])
  w_fc, b_fc = jnp.asarray(a['w_fc']), jnp.asarray(a['b_fc'])
  return losses.srrl_loss(e_s, jnp.asarray(a['f_t']), jnp.asarray(a['z_t']),
                          lambda e: e @ w_fc.T + b_fc)


def test_srrl_matches_the_float64_reference():
  """float64: the port's value to float64 rounding."""
  a = _setup(0)
  expected = _np_srrl(**a)
  with jax.enable_x64():
    got = jax.jit(_jax_srrl)(jnp.asarray(a['f_s']), a)
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_srrl_gradient_matches_the_float64_reference():
  """The float64 gradient with respect to the student's pooled feature in
  three random directions against central differences of the port (step
  1e-6); the teacher's feature and logits get none."""
  a = _setup(1)
  with jax.enable_x64():
    g = np.asarray(jax.grad(_jax_srrl)(jnp.asarray(a['f_s']), a))
    e_s = jnp.asarray(np.maximum(a['f_s'] @ a['w_conv'].T, 0.0))
    g_t = jax.grad(lambda f_t, z_t: losses.srrl_loss(
        e_s, f_t, z_t, lambda e: e @ jnp.asarray(a['w_fc']).T),
                   argnums=(0, 1))(jnp.asarray(a['f_t']),
                                   jnp.asarray(a['z_t']))
  assert not any(np.any(np.asarray(x)) for x in g_t)
  rng = np.random.default_rng(2)
  h = 1e-6
  for _ in range(3):
    v = rng.normal(size=a['f_s'].shape)
    numeric = (_np_srrl(**dict(a, f_s=a['f_s'] + h * v)) -
               _np_srrl(**dict(a, f_s=a['f_s'] - h * v))) / (2 * h)
    np.testing.assert_allclose(np.sum(g * v), numeric, rtol=1e-7)


def test_srrl_parts_and_bad_shapes():
  """The two parts are the two MSEs; mismatched shapes name SRRL."""
  a = _setup(3)
  e_s = np.maximum(a['f_s'] @ a['w_conv'].T, 0.0)
  fm, sr = losses.srrl_terms(e_s, a['f_t'], a['z_t'],
                             lambda e: e @ a['w_fc'].T + a['b_fc'])
  np.testing.assert_allclose(fm, np.mean((e_s - a['f_t']) ** 2), rtol=1e-5)
  np.testing.assert_allclose(
      sr, np.mean((e_s @ a['w_fc'].T + a['b_fc'] - a['z_t']) ** 2),
      rtol=1e-5)
  with pytest.raises(ValueError, match='SRRL'):
    losses.srrl_loss(np.ones((4, 8)), np.ones((4, 9)), np.ones((4, 3)),
                     lambda e: e)


def test_srrl_connector_is_torch_conv_bn_relu():
  """A bias-free kernel within U(+-1/sqrt(fan_in)), BatchNorm, ReLU."""
  conn = srrl_connector.SRRLConnector(32)
  f = np.random.default_rng(4).normal(size=(8, 16)).astype(np.float32)
  variables = conn.init(jax.random.key(0), f, train=False)
  kernel = variables['params']['conv']['kernel']
  assert kernel.shape == (16, 32) and 'bias' not in variables['params']['conv']
  assert np.max(np.abs(kernel)) <= 1 / np.sqrt(16)
  e, _ = conn.apply(variables, f, train=True, mutable=['batch_stats'])
  x = f @ np.asarray(kernel)
  ref = np.maximum((x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), 0.0)
  np.testing.assert_allclose(e, ref, rtol=1e-4, atol=1e-5)


# --- the method: term, connector per pair, training -------------------------

IMAGE_SHAPE = (28, 28, 1)


def _config():
  """resnet8 (pooled width 64) from resnet8x4 (256): the connector widens."""
  config = smoke.get_config()
  config.update(model='resnet8', teacher='resnet8x4', method='srrl')
  return config


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32),
          'index': rng.permutation(64)[:16].astype(np.int32)}


def test_term_is_the_loss_on_the_references_inputs():
  """SimKD's recipe (CE 1, KD 1, SRRL 1); the term is `losses.srrl_loss` on
  the connector's output from the student's pooled feature, the teacher's
  pooled feature and logits, and the teacher's fc hand-wired, and the
  float64 formula on those."""
  config = _config()
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [
      ('ce', 1.0), ('kd', 1.0), ('srrl', 1.0)]
  variables = distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  teacher_vars = make_teacher_variables('resnet8x4')
  images = _batch(0)['image'].astype(np.float32) / 255.0
  _, (metrics, _) = distiller.loss_fn(
      variables['params'],
      {'batch_stats': variables['batch_stats'], 'term_state': {},
       'teacher': teacher_vars},
      {'image': images, 'label': _batch(0)['label']}, jax.random.key(0), 0)
  _, f_s = distiller.student.apply(
      {'params': variables['params']['student'],
       'batch_stats': variables['batch_stats']['student']},
      images, train=True, mutable=['batch_stats'])[0]
  z_t, f_t = distiller.teacher.apply(teacher_vars, images, train=False)
  e_s = distiller.adapter('srrl').apply(
      {'params': variables['params']['srrl'],
       'batch_stats': variables['batch_stats']['srrl']},
      f_s['pre_logits'], train=True, mutable=['batch_stats'])[0]
  assert e_s.shape == (16, 256)
  fc = teacher_vars['params']['fc']
  expected = losses.srrl_loss(e_s, f_t['pre_logits'], z_t,
                              lambda e: e @ fc['kernel'] + fc['bias'])
  np.testing.assert_allclose(metrics['srrl'], expected, rtol=1e-5)
  e, w, b = (np.asarray(a, np.float64) for a in (e_s, fc['kernel'],
                                                  fc['bias']))
  ref = (np.mean((e - np.asarray(f_t['pre_logits'], np.float64)) ** 2)
         + np.mean((e @ w + b - np.asarray(z_t, np.float64)) ** 2))
  np.testing.assert_allclose(metrics['srrl'], ref, rtol=1e-4)


def test_method_trains_a_few_steps():
  """Four jitted steps on a repeated batch: finite, the term and the total
  go down, the connector moves."""
  config = _config()
  values, totals, moved = train_a_few_steps(
      config, 'srrl', _batch(1), make_teacher_variables('resnet8x4'), IMAGE_SHAPE)
  assert np.all(np.isfinite(values + totals)), (values, totals)
  assert values[-1] < values[0], values
  assert totals[-1] < totals[0], totals
  assert all(moved)


@pytest.mark.parametrize('row', cifar100_distill.TABLE,
                         ids=['-'.join(r) for r in cifar100_distill.TABLE])
def test_every_cifar100_pair_traces(row):
  """Each pair of the table: the loss traces, with one connector from the
  student's pooled width D_s to the teacher's D_t (D_s D_t + 2 D_t
  parameters: a bias-free 1x1 conv and BatchNorm)."""
  t_name, s_name = row
  config = cifar100_distill.get_config(
      f'teacher={t_name},student={s_name},method=srrl')
  config_checks.check(config)
  d = objective.create(config, 100, (32, 32, 3))
  variables, loss = trace_loss(d, (32, 32, 3))
  assert loss.shape == ()
  d_s, d_t = (objective.feature_shapes(net, (32, 32, 3))['pre_logits']
              .shape[-1] for net in (d.student, d.teacher))
  params = jax.tree.leaves(variables['params']['srrl'])
  assert sum(int(np.prod(a.shape)) for a in params) == d_s * d_t + 2 * d_t
