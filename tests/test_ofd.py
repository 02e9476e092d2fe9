"""OFD (mdistiller's `distillers/OFD.py`): the margin, the loss and its
gradient against float64 numpy ports of the reference code, the term's
features and connectors, the pairs it refuses, and a few training steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from adain_kd_jax import losses
from adain_kd_jax.methods import objective
from adain_kd_jax.methods import ofd_connectors
from adain_kd_jax.training import config_checks
from configs import cifar100_distill
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import train_a_few_steps
from tests.conftest import term_inputs
from tests.conftest import trace_loss

IMAGE_SHAPE = (28, 28, 1)
# The zoo's pre-ReLU maps (N = 8): resnet32x4 -> resnet8x4 after the
# connectors (the same sizes), and a teacher twice the student's size
# (pooled, as vgg13's first stage against a 16x16 student map).
SAME = (((8, 32, 32, 64), (8, 32, 32, 64)), ((8, 16, 16, 128),
                                              (8, 16, 16, 128)),
        ((8, 8, 8, 256), (8, 8, 8, 256)))
POOLED = (((8, 8, 8, 32), (8, 16, 16, 32)), ((8, 4, 4, 64), (8, 4, 4, 64)))


# --- float64 numpy ports of mdistiller's OFD.py (NCHW) ----------------------

def _np_margin(std, mean):
  """OFD.init_ofd_modules' margin of one BN (weight = std, bias = mean)."""
  margin = []
  for s, m in zip(std, mean):
    s = abs(float(s))
    m = float(m)
    if stats.norm.cdf(-m / s) > 0.001:
      margin.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi)
                    / stats.norm.cdf(-m / s) + m)
    else:
      margin.append(-3 * s)
  return np.asarray(margin)[None, :, None, None]


def _np_adaptive_pool(t, h, w):
  """F.adaptive_avg_pool2d of NCHW to (h, w), for sizes that divide."""
  n, c, big_h, big_w = t.shape
  return t.reshape(n, c, h, big_h // h, w, big_w // w).mean(axis=(3, 5))


def _np_feat_masks(source, target, margin):
  """feat_loss's three masks."""
  return (((source > margin) & (target <= margin)),
          ((source > target) & (target > margin) & (target <= 0)),
          (target > 0))


def _np_feat_loss(source, target, margin):
  """OFD.py's feat_loss."""
  m1, m2, m3 = _np_feat_masks(source, target, margin)
  loss = ((source - margin) ** 2 * m1 + (source - target) ** 2 * m2
          + (source - target) ** 2 * m3)
  return np.abs(loss).mean(axis=0).sum()


def _np_ofd(f_s, f_t, margins):
  """OFD.ofd_loss after the connectors, on NCHW maps."""
  n = len(f_s)
  return sum(_np_feat_loss(s, _np_adaptive_pool(t, *s.shape[2:]), m)
             / 2 ** (n - i - 1)
             for i, (s, t, m) in enumerate(zip(f_s, f_t, margins)))


def _np_ofd_grad(f_s, f_t, margins):
  """The analytic gradient of `_np_ofd` in the student's maps (the masks
  are constant almost everywhere)."""
  n, grads = len(f_s), []
  for i, (s, t, m) in enumerate(zip(f_s, f_t, margins)):
    t = _np_adaptive_pool(t, *s.shape[2:])
    m1, m2, m3 = _np_feat_masks(s, t, m)
    grads.append((2 * (s - m) * m1 + 2 * (s - t) * (m2 | m3))
                 / len(s) / 2 ** (n - i - 1))
  return grads


def _nchw(x):
  return np.transpose(x, (0, 3, 1, 2))


def _case(shapes, seed):
  """Random pre-ReLU maps and BN (weight, bias) of the teacher's stages."""
  rng = np.random.default_rng(seed)
  f_s = [rng.normal(size=s) for s, _ in shapes]
  f_t = [rng.normal(size=t) for _, t in shapes]
  bns = [(rng.normal(size=t[-1]), rng.normal(size=t[-1])) for _, t in shapes]
  bns[0][1][:3] = 5.0  # Channels with almost no negative mass: -3 std.
  return f_s, f_t, bns


def test_margin_matches_the_float64_reference():
  """Both branches of the margin, to float64 rounding (float32: to its
  own); a channel of scale 0 gets 0."""
  rng = np.random.default_rng(0)
  scale, bias = rng.normal(size=256), 2 * rng.normal(size=256)
  bias[:4] = (4.0, 6.0, 10.0, -2.0)
  expected = _np_margin(scale, bias).ravel()
  assert np.sum(expected == -3 * np.abs(scale)) >= 3
  with jax.enable_x64():
    got = losses.ofd_margin(jnp.asarray(scale), jnp.asarray(bias))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)
  np.testing.assert_allclose(
      losses.ofd_margin(scale.astype(np.float32), bias.astype(np.float32)),
      expected, rtol=1e-5, atol=1e-6)
  assert float(losses.ofd_margin(np.zeros(1), np.ones(1))[0]) == 0.0


@pytest.mark.parametrize('shapes', [SAME, POOLED], ids=['same', 'pooled'])
def test_loss_and_gradient_match_the_float64_reference(shapes):
  """Value to float64 rounding (float32: to its own); the float64 gradient
  against the analytic gradient of the numpy port; none to the teacher."""
  f_s, f_t, bns = _case(shapes, 1)
  margins_np = [_np_margin(*bn) for bn in bns]
  expected = _np_ofd([_nchw(x) for x in f_s], [_nchw(x) for x in f_t],
                     margins_np)
  with jax.enable_x64():
    margins = [losses.ofd_margin(*(jnp.asarray(a) for a in bn)) for bn in bns]
    fn = jax.jit(losses.ofd_loss)
    got = fn(*([jnp.asarray(x) for x in f] for f in (f_s, f_t)), margins)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    g_s, g_t = jax.grad(losses.ofd_loss, argnums=(0, 1))(
        [jnp.asarray(x) for x in f_s], [jnp.asarray(x) for x in f_t],
        margins)
  for got_g, ref_g in zip(g_s, _np_ofd_grad(
      [_nchw(x) for x in f_s], [_nchw(x) for x in f_t], margins_np)):
    np.testing.assert_allclose(_nchw(np.asarray(got_g)), ref_g, rtol=1e-12,
                               atol=1e-15)
  assert not any(np.any(np.asarray(g)) for g in g_t)
  got32 = jax.jit(losses.ofd_loss)(
      [x.astype(np.float32) for x in f_s], [x.astype(np.float32) for x in f_t],
      [losses.ofd_margin(*(a.astype(np.float32) for a in bn)) for bn in bns])
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, expected, rtol=2e-4)


def test_bad_inputs_raise():
  """Lists of different lengths and maps that do not pair name OFD."""
  with pytest.raises(ValueError, match='OFD: 1 student maps, 2 teacher'):
    losses.ofd_loss([np.ones((2, 4, 4, 3))], [np.ones((2, 4, 4, 3))] * 2,
                    [np.zeros(3)])
  with pytest.raises(ValueError, match='OFD: student map'):
    losses.ofd_loss([np.ones((2, 4, 4, 3))], [np.ones((2, 4, 4, 5))],
                    [np.zeros(5)])


def _config(model='resnet8', teacher='resnet8'):
  config = smoke.get_config()
  config.update(model=model, teacher=teacher, method='ofd')
  return config


@pytest.mark.parametrize('model, teacher, match', [
    ('MobileNetV2', 'resnet8', r'OFD needs .*config\.model=\'MobileNetV2\''),
    ('resnet8', 'MobileNetV2', r'OFD needs .*config\.teacher='),
    ('resnet8', 'ShuffleV1', r'config\.teacher=\'ShuffleV1\': mdistiller'),
    ('resnet8', 'vgg8', r'student stage 1 \(28x28\) with teacher stage 2')])
def test_pairs_it_cannot_build_are_refused(model, teacher, match):
  """One line saying why: a network without pre-ReLU maps, a ShuffleNet
  teacher (no BN to take the margin from), a teacher map smaller than the
  student's."""
  with pytest.raises(ValueError, match=match) as e:
    objective.create(_config(model, teacher), 10, IMAGE_SHAPE)
  assert '\n' not in str(e.value)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32),
          'index': rng.permutation(64)[:16].astype(np.int32)}


def test_term_reads_the_references_features():
  """The term is the reference loss on mdistiller's inputs: every stage's
  pre-ReLU map of the student through its connector, the teacher's, and the
  margins of the teacher's BNs before its ReLUs (resnet8: each stage's last
  block's bn2)."""
  config = _config()
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [('ce', 1.0),
                                                     ('ofd', 1e-3)]
  got = term_inputs(distiller, _batch(0))
  variables, teacher_vars, metrics, f_s, f_t = (
      got[k] for k in ('variables', 'teacher_vars', 'metrics', 'f_s', 'f_t'))
  names = [f'preact_stage{k}' for k in (1, 2, 3)]
  connected = distiller.adapter('ofd').apply(
      {'params': variables['params']['ofd'],
       'batch_stats': variables['batch_stats']['ofd']},
      {n: f_s[n] for n in names}, train=True, mutable=['batch_stats'])[0]
  bns = [teacher_vars['params'][f'stage{k}_block0']['bn2'] for k in (1, 2, 3)]
  f64 = lambda x: _nchw(np.asarray(x, np.float64))
  expected = _np_ofd([f64(connected[n]) for n in names],
                     [f64(f_t[n]) for n in names],
                     [_np_margin(bn['scale'], bn['bias']) for bn in bns])
  np.testing.assert_allclose(metrics['ofd'], expected, rtol=2e-4)


def test_method_trains_a_few_steps():
  """Four jitted steps on a repeated batch: finite, the term goes down, the
  connectors move."""
  config = _config()
  values, totals, moved = train_a_few_steps(
      config, 'ofd', _batch(1), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(values + totals)), (values, totals)
  assert values[-1] < values[0], values
  assert all(moved)


@pytest.mark.parametrize('row', cifar100_distill.TABLE,
                         ids=['-'.join(r) for r in cifar100_distill.TABLE])
def test_every_cifar100_pair_traces_or_is_refused(row):
  """Each pair of the table: the loss traces with one connector per aligned
  stage (1x1 conv C_s x C_t + BN 2 C_t parameters), or, for a MobileNetV2
  student, one line saying why not."""
  t_name, s_name = row
  config = cifar100_distill.get_config(
      f'teacher={t_name},student={s_name},method=ofd')
  config_checks.check(config)
  if s_name == 'MobileNetV2':
    with pytest.raises(ValueError, match='OFD needs the student'):
      objective.create(config, 100, (32, 32, 3))
    return
  d = objective.create(config, 100, (32, 32, 3))
  variables, loss = trace_loss(d, (32, 32, 3))
  assert loss.shape == ()
  shapes_s = objective.feature_shapes(d.student, (32, 32, 3))
  shapes_t = objective.feature_shapes(d.teacher, (32, 32, 3))
  pairs = ofd_connectors.aligned_stages(shapes_s, shapes_t)
  assert len(pairs) == min(d.student.num_stages, d.teacher.num_stages)
  expected = sum(
      shapes_s[f'preact_stage{k_s}'].shape[-1] * c_t + 2 * c_t
      for k_s, k_t in pairs
      for c_t in [shapes_t[f'preact_stage{k_t}'].shape[-1]])
  assert sum(int(np.prod(a.shape)) for a in
             jax.tree.leaves(variables['params']['ofd'])) == expected
