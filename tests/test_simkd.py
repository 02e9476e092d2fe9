"""SimKD (DefangChen/SimKD): the projector and the loss, value and gradient,
against a float64 numpy port of the reference; the projector's parameters
on every CIFAR-100 pair (or the pair refused); the model's evaluation
through the projector and the teacher's classifier, a few training steps
and a run's summary."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax import models
from adain_kd_jax.methods import objective
from adain_kd_jax.methods import simkd_projector
from adain_kd_jax.training import config_checks
from adain_kd_jax.training import loop
from configs import cifar100_distill
from configs import smoke
from tests.conftest import build_tiny_step
from tests.conftest import idx_smoke_config
from tests.conftest import make_teacher_variables
from tests.conftest import train_a_few_steps
from tests.conftest import trace_loss

EPS = 1e-5  # BatchNorm2d's.


# --- float64 numpy port of SimKD's module, loss and prediction -------------

def _np_adaptive_pool(x, size):
  """torch's adaptive_avg_pool2d of (N, H, W, C) to (size, size): bin i
  averages [floor(i H / size), ceil((i + 1) H / size))."""
  n, h, w, c = x.shape
  out = np.zeros((n, size, size, c))
  for i in range(size):
    h0, h1 = (i * h) // size, -((-(i + 1) * h) // size)
    for j in range(size):
      w0, w1 = (j * w) // size, -((-(j + 1) * w) // size)
      out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
  return out


def _np_conv(x, kernel):
  """A bias-free stride-1 convolution, padding k // 2, HWIO kernel."""
  k = kernel.shape[0]
  p = k // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  h, w = x.shape[1:3]
  return sum(xp[:, i:i + h, j:j + w] @ kernel[i, j]
             for i in range(k) for j in range(k))


def _np_bn_relu(x, gamma, beta):
  """BatchNorm2d in training mode (biased batch variance), then ReLU."""
  mean = x.mean(axis=(0, 1, 2))
  var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
  return np.maximum((x - mean) / np.sqrt(var + EPS) * gamma + beta, 0.0)


def _np_simkd(f_s, f_t, w, w_fc, b_fc):
  """models/util.py SimKD.forward in training mode (spatial alignment,
  the transfer bottleneck, the teacher's classifier on its pooled output)
  and loops.py's `criterion_kd(trans_feat_s, trans_feat_t)`, nn.MSELoss.
  Returns (loss, pred_feat_s)."""
  s_h, t_h = f_s.shape[1], f_t.shape[1]
  if s_h > t_h:
    source, target = _np_adaptive_pool(f_s, t_h), f_t
  else:
    source, target = f_s, _np_adaptive_pool(f_t, s_h)
  x = source
  for i in range(3):
    x = _np_bn_relu(_np_conv(x, w[f'conv{i}']), w[f'gamma{i}'],
                    w[f'beta{i}'])
  pred = x.mean(axis=(1, 2)) @ w_fc + b_fc
  return np.mean((x - target) ** 2), pred


# Zoo shapes of the last maps (N small): resnet8x4 -> resnet32x4 (equal
# sizes), ShuffleV2 (4x4x464) -> resnet32x4 (8x8x256, pooled to 4x4), and a
# student map larger than the teacher's (8x8 -> 4x4, the source pooled).
CASES = {'resnet8x4-resnet32x4': ((4, 8, 8, 256), (4, 8, 8, 256)),
         'ShuffleV2-resnet32x4': ((4, 4, 4, 464), (4, 8, 8, 256)),
         'larger-student': ((6, 8, 8, 24), (6, 4, 4, 32))}
K = 100


def _setup(s_shape, t_shape, seed, factor=2):
  rng = np.random.default_rng(seed)
  c_s, c_t = s_shape[-1], t_shape[-1]
  m = c_t // factor
  w = {}
  for i, (k, c_in, c_out) in enumerate(((1, c_s, m), (3, m, m),
                                         (1, m, c_t))):
    w[f'conv{i}'] = rng.normal(size=(k, k, c_in, c_out)) / np.sqrt(
        k * k * c_in)
    w[f'gamma{i}'] = rng.uniform(0.5, 1.5, c_out)
    w[f'beta{i}'] = rng.normal(0, 0.1, c_out)
  return dict(f_s=np.maximum(rng.normal(size=s_shape), 0.0),
              f_t=np.maximum(rng.normal(size=t_shape), 0.0), w=w,
              w_fc=rng.normal(size=(c_t, K)) / np.sqrt(c_t),
              b_fc=rng.normal(0, 0.1, K))


def _projector(a):
  """The flax projector for `a`'s shapes and its variables from `a`."""
  s_h, t_h = a['f_s'].shape[1], a['f_t'].shape[1]
  c_t = a['f_t'].shape[-1]
  proj = simkd_projector.SimKDProjector(
      features=c_t, factor=c_t // a['w']['conv0'].shape[-1],
      pool_to=t_h if s_h > t_h else 0, dtype=jnp.float64)
  params = {f'conv{i}': {'kernel': jnp.asarray(a['w'][f'conv{i}'])}
            for i in range(3)}
  params.update({f'bn{i}': {'scale': jnp.asarray(a['w'][f'gamma{i}']),
                            'bias': jnp.asarray(a['w'][f'beta{i}'])}
                 for i in range(3)})
  stats = {f'bn{i}': {'mean': jnp.zeros(a['w'][f'gamma{i}'].shape),
                      'var': jnp.ones(a['w'][f'gamma{i}'].shape)}
           for i in range(3)}
  return proj, {'params': params, 'batch_stats': stats}


def _jax_simkd(f_s, a):
  """(loss, logits): the projector (train mode), `losses.simkd_loss` and
  `losses.simkd_logits` with the classifier of `a`."""
  proj, variables = _projector(a)
  p_s, _ = proj.apply(variables, f_s, train=True, mutable=['batch_stats'])
  w_fc, b_fc = jnp.asarray(a['w_fc']), jnp.asarray(a['b_fc'])
  return (losses.simkd_loss(p_s, jnp.asarray(a['f_t'])),
          losses.simkd_logits(p_s, lambda v: v @ w_fc + b_fc))


@pytest.mark.parametrize('case', CASES)
def test_simkd_matches_the_float64_reference(case):
  """float64: the loss and the prediction to float64 rounding."""
  a = _setup(*CASES[case], seed=0)
  loss, pred = _np_simkd(**a)
  with jax.enable_x64():
    got_loss, got_pred = jax.jit(_jax_simkd)(jnp.asarray(a['f_s']), a)
    assert got_loss.dtype == jnp.float64
  np.testing.assert_allclose(got_loss, loss, rtol=1e-12)
  np.testing.assert_allclose(got_pred, pred, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('case', CASES)
def test_simkd_gradient_matches_the_float64_reference(case):
  """The float64 gradient with respect to the student's map in three random
  directions against central differences of the port (step 1e-6); the
  teacher's map gets none."""
  a = _setup(*CASES[case], seed=1)
  with jax.enable_x64():
    g = np.asarray(jax.grad(lambda f: _jax_simkd(f, a)[0])(
        jnp.asarray(a['f_s'])))
    n, t_h, _, c_t = a['f_t'].shape
    size = min(a['f_s'].shape[1], t_h)
    p_s = jnp.asarray(np.random.default_rng(3).normal(size=(n, size, size,
                                                            c_t)))
    g_t = jax.grad(losses.simkd_loss, argnums=1)(p_s, jnp.asarray(a['f_t']))
  assert not np.any(np.asarray(g_t))
  rng = np.random.default_rng(2)
  h = 1e-6
  for _ in range(3):
    v = rng.normal(size=a['f_s'].shape)
    numeric = (_np_simkd(**dict(a, f_s=a['f_s'] + h * v))[0] -
               _np_simkd(**dict(a, f_s=a['f_s'] - h * v))[0]) / (2 * h)
    np.testing.assert_allclose(np.sum(g * v), numeric, rtol=1e-6)


def test_simkd_loss_refuses_maps_that_do_not_pair():
  """A projected map of another width, or larger than the teacher's, is
  refused in one line naming SimKD."""
  with pytest.raises(ValueError, match='SimKD'):
    losses.simkd_loss(np.ones((2, 4, 4, 8)), np.ones((2, 4, 4, 9)))
  with pytest.raises(ValueError, match='SimKD'):
    losses.simkd_loss(np.ones((2, 8, 8, 8)), np.ones((2, 4, 4, 8)))


def test_projector_is_the_references_bottleneck():
  """Bias-free 1x1, 3x3 and 1x1 kernels C_s -> C_t // 2 -> C_t // 2 -> C_t
  within PyTorch's U(+-1/sqrt(fan_in)), unit BatchNorm scales, and the
  reference's parameter count."""
  proj = simkd_projector.SimKDProjector(features=32, factor=2)
  variables = proj.init(jax.random.key(0), np.zeros((2, 4, 4, 24),
                                                    np.float32), train=False)
  params = variables['params']
  shapes = {k: v['kernel'].shape for k, v in params.items() if 'conv' in k}
  assert shapes == {'conv0': (1, 1, 24, 16), 'conv1': (3, 3, 16, 16),
                    'conv2': (1, 1, 16, 32)}
  assert all(set(params[f'conv{i}']) == {'kernel'} for i in range(3))
  for i, fan_in in enumerate((24, 9 * 16, 16)):
    kernel = np.asarray(params[f'conv{i}']['kernel'])
    assert np.max(np.abs(kernel)) <= 1 / np.sqrt(fan_in)
    assert np.std(kernel) > 0.3 / np.sqrt(fan_in)
  np.testing.assert_array_equal(params['bn2']['scale'], np.ones(32))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert count == simkd_projector.projector_param_count(24, 32, 2)
  assert count == 24 * 16 + 9 * 16 * 16 + 16 * 32 + 2 * (16 + 16 + 32)


# --- the method: pairs, evaluation, training, the summary -------------------

IMAGE_SHAPE = (28, 28, 1)


def _config():
  """resnet8 (last map 7x7x64) from resnet8x4 (7x7x256)."""
  config = smoke.get_config()
  config.update(model='resnet8', teacher='resnet8x4', method='simkd')
  return config


def _batch(seed, n=16):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def _refusal(t_name):
  """Why SimKD refuses the teacher `t_name` on 32x32 CIFAR-100, or ''."""
  shapes = objective.feature_shapes(models.create_model(t_name, 100),
                                    (32, 32, 3))
  c_t = shapes[simkd_projector.last_stage(shapes)].shape[-1]
  return '' if c_t == shapes['pre_logits'].shape[-1] else 'a head'


@pytest.mark.parametrize('row', cifar100_distill.TABLE,
                         ids=['-'.join(r) for r in cifar100_distill.TABLE])
def test_every_cifar100_pair_traces(row):
  """Each pair of the table: the loss traces with one projector from the
  student's last width to the teacher's, of the reference's parameter
  count (its recipe: the MSE alone)."""
  t_name, s_name = row
  config = cifar100_distill.get_config(
      f'teacher={t_name},student={s_name},method=simkd')
  config_checks.check(config)
  assert not _refusal(t_name)  # The table's teachers all classify f_S.
  d = objective.create(config, 100, (32, 32, 3))
  assert [(n, w) for n, _, w in d.terms] == [('simkd', 1.0)]
  variables, loss = trace_loss(d, (32, 32, 3))
  assert loss.shape == ()
  c_s, c_t = (
      feats[simkd_projector.last_stage(feats)].shape[-1]
      for feats in (objective.feature_shapes(net, (32, 32, 3))
                    for net in (d.student, d.teacher)))
  params = jax.tree.leaves(variables['params']['simkd'])
  assert sum(int(np.prod(a.shape)) for a in params) == (
      simkd_projector.projector_param_count(c_s, c_t, 2))


@pytest.mark.parametrize('teacher', ['MobileNetV2', 'ShuffleV2'])
def test_teacher_with_a_head_after_its_last_map_is_refused(teacher):
  """A teacher whose classifier does not read the mean of its last map
  (a conv head between them) is refused in one line naming the field."""
  assert _refusal(teacher)
  config = cifar100_distill.get_config(
      f'teacher={teacher},student=resnet8x4,method=simkd')
  with pytest.raises(ValueError, match=r'SimKD reuses .*config\.teacher=') \
      as err:
    objective.create(config, 100, (32, 32, 3))
  assert '\n' not in str(err.value)


@pytest.mark.parametrize('factor', [0, -1, True])
def test_bad_factor_is_refused(factor):
  """config.simkd.factor must be an int >= 1: one line naming the field."""
  config = _config()
  config.simkd.factor = factor
  with pytest.raises(ValueError, match=r'config\.simkd\.factor=.* is '
                                       r'invalid: use an int >= 1'):
    config_checks.check(config)


def test_export_of_a_simkd_run_is_refused():
  """config.export with SimKD is refused in one line: the student alone is
  not the model."""
  config = _config()
  config.export = True
  with pytest.raises(ValueError, match=r'config\.export=True is invalid'):
    config_checks.check(config)


def _parts(config):
  return build_tiny_step(config, IMAGE_SHAPE, total_steps=100)


def test_eval_is_the_projector_through_the_teachers_classifier():
  """The jitted eval step of a SimKD state (after a training step, so that
  its statistics moved) counts the hand-wired model: the student's last
  map (inference mode) -> the projector (running statistics) -> mean ->
  the teacher's fc; not the student's own logits."""
  parts = _parts(_config())
  teacher_vars = make_teacher_variables('resnet8x4')
  state = parts.init_state(jax.random.key(0))
  batch = _batch(1)
  state, _ = parts.multi_step(state, teacher_vars, None,
                              jax.tree.map(lambda x: x[None], batch))
  eval_batch = dict(_batch(2), mask=np.ones(16, np.float32))
  eval_batch['mask'][-3:] = 0.0  # Padding, masked out.
  sums = jax.device_get(parts.eval_step(state, teacher_vars, eval_batch))

  d = parts.distiller
  images = (eval_batch['image'].astype(np.float32) / 255.0 - 0.3) / 0.35
  z_s, f_s = d.student.apply(
      {'params': state.params['student'],
       'batch_stats': state.batch_stats['student']}, images, train=False)
  p_s = d.adapter('simkd').apply(
      {'params': state.params['simkd'],
       'batch_stats': state.batch_stats['simkd']}, f_s['stage3'],
      train=False)
  fc = teacher_vars['params']['fc']
  logits = np.asarray(np.mean(np.asarray(p_s, np.float64), axis=(1, 2))
                      @ np.asarray(fc['kernel'], np.float64)
                      + np.asarray(fc['bias'], np.float64))
  assert not np.allclose(logits, np.asarray(z_s), atol=1e-3)
  mask, labels = eval_batch['mask'], eval_batch['label']
  logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1,
                                                            keepdims=True)),
                                -1, keepdims=True)) - logits.max(
                                    -1, keepdims=True)
  nll = -logp[np.arange(16), labels]
  assert sums['count'] == 13
  assert sums['correct'] == np.sum((np.argmax(logits, -1) == labels) * mask)
  np.testing.assert_allclose(sums['loss'], np.sum(nll * mask), rtol=1e-5)


def test_method_trains_a_few_steps():
  """Four jitted steps on a repeated batch: finite, the MSE (the whole
  loss) goes down, the projector moves."""
  values, totals, moved = train_a_few_steps(
      _config(), 'simkd', _batch(3), make_teacher_variables('resnet8x4'),
      IMAGE_SHAPE)
  assert np.all(np.isfinite(values + totals)), (values, totals)
  assert values[-1] < values[0], values
  assert totals == values
  assert all(moved)


def test_run_summary_names_the_predicting_model(idx_data_dir, teacher_export,
                                                tmp_path, capsys):
  """A SimKD run's summary.json and finish line say that the projector and
  the teacher's classifier predict; a KD run's do not."""
  workdir = str(tmp_path / 'simkd')
  config = idx_smoke_config(idx_data_dir, teacher_export, method='simkd',
                            num_train_steps=2)
  summary = loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'summary.json')) as f:
    written = json.load(f)
  assert written['predicted_by'] == summary['predicted_by']
  assert 'SimKD projector' in written['predicted_by']
  assert "teacher's classifier" in written['predicted_by']
  assert f'(predicted by {written["predicted_by"]}).' in capsys.readouterr().out
  assert 'predicted_by' not in loop.train_and_evaluate(
      idx_smoke_config(idx_data_dir, teacher_export, method='kd',
                       num_train_steps=2), str(tmp_path / 'kd'))
