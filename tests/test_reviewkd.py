"""ReviewKD (mdistiller's `distillers/ReviewKD.py`): the hierarchical
context loss and its gradient, the nearest resize and the attention-based
fusion against float64 numpy ports of the reference code, the term's
features and warm-up, every CIFAR-100 pair traced, and a few training
steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import objective
from adain_kd_jax.methods import reviewkd_abf
from adain_kd_jax.training import config_checks
from configs import cifar100_distill
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import train_a_few_steps
from tests.conftest import term_inputs
from tests.conftest import trace_loss

IMAGE_SHAPE = (28, 28, 1)
# The fused levels of resnet32x4 -> resnet8x4 (N = 2), shallowest first.
LEVELS = ((2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256), (2, 1, 1, 256))
# wrn_40_2 -> wrn_16_2: the student's levels and the teacher's shapes.
WRN_LEVELS = ((2, 32, 32, 32), (2, 16, 16, 64), (2, 8, 8, 128), (2, 1, 1, 128))
WRN_TEACHER = ((32, 32), (64, 16), (128, 8), (128, 1))


# --- float64 numpy ports of mdistiller's ReviewKD.py (NCHW) -----------------

def _np_pool(x, size):
  """F.adaptive_avg_pool2d of NCHW to (size, size): output bin i of an axis
  of S averages [floor(i S / o), ceil((i + 1) S / o))."""
  h, w = x.shape[2:]
  bins = lambda big: [(i * big // size, -(-(i + 1) * big // size))
                      for i in range(size)]
  return np.stack([np.stack([x[:, :, a:b, c:d].mean(axis=(2, 3))
                             for c, d in bins(w)], -1)
                   for a, b in bins(h)], -2)


def _np_hcl(fstudent, fteacher):
  """ReviewKD.py's hcl_loss."""
  loss_all = 0.0
  for fs, ft in zip(fstudent, fteacher):
    h = fs.shape[2]
    loss = np.mean((fs - ft) ** 2)
    cnt, tot = 1.0, 1.0
    for l in (4, 2, 1):
      if l >= h:
        continue
      cnt /= 2.0
      loss += np.mean((_np_pool(fs, l) - _np_pool(ft, l)) ** 2) * cnt
      tot += cnt
    loss_all = loss_all + loss / tot
  return loss_all


def _np_nearest(x, size):
  """F.interpolate(x, (size, size), mode='nearest') of NCHW."""
  h, w = x.shape[2:]
  rows = np.floor(np.arange(size) * (h / size)).astype(int)
  cols = np.floor(np.arange(size) * (w / size)).astype(int)
  return x[:, :, rows][:, :, :, cols]


def _np_bn(x, p):
  """BatchNorm2d in training mode (batch statistics, biased variance)."""
  mean = x.mean(axis=(0, 2, 3), keepdims=True)
  var = x.var(axis=(0, 2, 3), keepdims=True)
  return ((x - mean) / np.sqrt(var + 1e-5) * p['scale'][None, :, None, None]
          + p['bias'][None, :, None, None])


def _np_conv(x, kernel_hwio, bias=None):
  """Conv2d, stride 1, padding k // 2, of NCHW with an HWIO kernel."""
  k = kernel_hwio.shape[0]
  pad = k // 2
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  h, w = x.shape[2:]
  out = sum(np.einsum('nchw,co->nohw', xp[:, :, i:i + h, j:j + w],
                      kernel_hwio[i, j]) for i in range(k) for j in range(k))
  return out if bias is None else out + bias[None, :, None, None]


def _np_abf(p, x, y, out_shape):
  """ABF.forward (training mode) with the Flax parameters `p`."""
  n, _, h, w = x.shape
  x = _np_bn(_np_conv(x, p['conv1']['kernel']), p['bn1'])
  if y is not None:
    y = _np_nearest(y, h)
    z = _np_conv(np.concatenate([x, y], 1), p['att_conv']['kernel'],
                 p['att_conv']['bias'])
    z = 1 / (1 + np.exp(-z))
    x = x * z[:, 0].reshape(n, 1, h, w) + y * z[:, 1].reshape(n, 1, h, w)
  if x.shape[-1] != out_shape:
    x = _np_nearest(x, out_shape)
  return _np_bn(_np_conv(x, p['conv2']['kernel']), p['bn2']), x


def _np_fusion(params, maps, out_sizes):
  """ReviewKD.forward_train's loop over the ABFs, deepest first."""
  n = len(maps)
  out, res = _np_abf(params[f'abf{n - 1}'], maps[-1], None, out_sizes[-1])
  results = [out]
  for i in reversed(range(n - 1)):
    out, res = _np_abf(params[f'abf{i}'], maps[i], res, out_sizes[i])
    results.insert(0, out)
  return results


def _nchw(x):
  return np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))


def _maps(seed):
  rng = np.random.default_rng(seed)
  return ([rng.normal(size=s) for s in LEVELS],
          [rng.normal(size=s) for s in LEVELS])


def test_hcl_matches_the_float64_reference():
  """Value to float64 rounding (float32: to its own)."""
  f_s, f_t = _maps(0)
  expected = _np_hcl([_nchw(x) for x in f_s], [_nchw(x) for x in f_t])
  with jax.enable_x64():
    got = jax.jit(losses.hcl_loss)([jnp.asarray(x) for x in f_s],
                                   [jnp.asarray(x) for x in f_t])
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)
  got32 = jax.jit(losses.hcl_loss)([x.astype(np.float32) for x in f_s],
                                   [x.astype(np.float32) for x in f_t])
  np.testing.assert_allclose(got32, expected, rtol=2e-4)


def test_hcl_gradient_matches_the_float64_reference():
  """The float64 gradient in three random directions against central
  differences of the numpy port (exact up to rounding: the loss is
  quadratic); none to the teacher."""
  f_s, f_t = _maps(1)
  with jax.enable_x64():
    g_s, g_t = jax.grad(losses.hcl_loss, argnums=(0, 1))(
        [jnp.asarray(x) for x in f_s], [jnp.asarray(x) for x in f_t])
  assert not any(np.any(np.asarray(g)) for g in g_t)
  rng, h = np.random.default_rng(2), 1e-3
  ref = lambda s: _np_hcl([_nchw(x) for x in s], [_nchw(x) for x in f_t])
  for _ in range(3):
    v = [rng.normal(size=x.shape) for x in f_s]
    numeric = (ref([x + h * d for x, d in zip(f_s, v)])
               - ref([x - h * d for x, d in zip(f_s, v)])) / (2 * h)
    analytic = sum(np.sum(np.asarray(g) * d) for g, d in zip(g_s, v))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-9)


@pytest.mark.parametrize('size_in, size_out', [(1, 8), (7, 14), (8, 4),
                                               (14, 7), (4, 8)])
def test_nearest_resize_is_torchs(size_in, size_out):
  """F.interpolate(mode='nearest'): pixel i takes floor(i * in / out)."""
  x = np.random.default_rng(3).normal(size=(2, size_in, size_in, 3))
  np.testing.assert_array_equal(
      _nchw(losses.nearest_resize(x, size_out, size_out)),
      _np_nearest(_nchw(x), size_out))


def test_fusion_matches_the_float64_reference():
  """The ABFs on wrn_16_2's levels (32, 16, 8, pooled) to wrn_40_2's
  shapes, computed in float64: the outputs of mdistiller's loop, to float64
  rounding."""
  shapes = WRN_TEACHER
  rng = np.random.default_rng(4)
  maps = tuple(rng.normal(size=s) for s in WRN_LEVELS)
  with jax.enable_x64():
    fusion = reviewkd_abf.ReviewKDFusion(out_shapes=shapes, mid_channels=128,
                                         dtype=jnp.float64)
    variables = fusion.init(jax.random.key(0), maps, train=False)
    params = jax.tree.map(
        lambda a: np.asarray(a, np.float64) + 0.1 * rng.normal(size=a.shape),
        variables['params'])
    got, _ = fusion.apply({'params': params,
                           'batch_stats': variables['batch_stats']},
                          tuple(jnp.asarray(m) for m in maps), train=True,
                          mutable=['batch_stats'])
  expected = _np_fusion(params, [_nchw(m) for m in maps],
                        [s for _, s in shapes])
  for g, e in zip(got, expected):
    np.testing.assert_allclose(_nchw(g), e, rtol=1e-9, atol=1e-10)
  assert 'att_conv' not in params['abf3']  # The deepest level fuses nothing.


def _config(model='resnet8', teacher='resnet8'):
  config = smoke.get_config()
  config.update(model=model, teacher=teacher, method='reviewkd')
  return config


def test_bad_setting_and_teacher_are_refused():
  """config.reviewkd.warmup_epochs named; a teacher without pre-ReLU maps
  in one line."""
  config = _config()
  config.reviewkd.warmup_epochs = 0.0
  with pytest.raises(ValueError, match=r'config.reviewkd.warmup_epochs=0.0'):
    objective.create(config, 10, IMAGE_SHAPE)
  with pytest.raises(ValueError, match=r"config.teacher='MobileNetV2'"):
    objective.create(_config(teacher='MobileNetV2'), 10, IMAGE_SHAPE)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32),
          'index': rng.permutation(64)[:16].astype(np.int32)}


def test_term_reads_the_references_features():
  """The term is the warm-up factor (1/20 at step 0, epoch 1) times the
  reference loss of the fused student levels against the teacher's pre-ReLU
  stage maps and pooled vector."""
  distiller = objective.create(_config(), 10, IMAGE_SHAPE)
  got = term_inputs(distiller, _batch(0))
  variables, metrics, f_s, f_t = (
      got[k] for k in ('variables', 'metrics', 'f_s', 'f_t'))
  s_maps = tuple(reviewkd_abf.as_map(f_s[n]) for n in
                 ('stage1', 'stage2', 'stage3', 'pre_logits'))
  fused = distiller.adapter('reviewkd').apply(
      {'params': variables['params']['reviewkd'],
       'batch_stats': variables['batch_stats']['reviewkd']},
      s_maps, train=True, mutable=['batch_stats'])[0]
  t_maps = [reviewkd_abf.as_map(f_t[n]) for n in
            ('preact_stage1', 'preact_stage2', 'preact_stage3',
             'pre_logits')]
  expected = _np_hcl([_nchw(x) for x in fused], [_nchw(x) for x in t_maps])
  np.testing.assert_allclose(metrics['reviewkd'], expected / 20, rtol=2e-4)


def test_method_trains_a_few_steps():
  """Four jitted steps on a repeated batch (no warm-up): finite, the term
  goes down, every ABF moves."""
  config = _config()
  config.reviewkd.warmup_epochs = 0.1
  values, totals, moved = train_a_few_steps(
      config, 'reviewkd', _batch(1), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(totals)), totals
  assert np.all(np.isfinite(values)) and values[-1] < values[0], values
  assert all(moved)


@pytest.mark.parametrize('row', cifar100_distill.TABLE,
                         ids=['-'.join(r) for r in cifar100_distill.TABLE])
def test_every_cifar100_pair_traces(row):
  """Each pair of the table: the loss traces, with one ABF per level (the
  pooled vector and the last min(S_s, S_t) stages) shaped to the
  teacher's."""
  t_name, s_name = row
  config = cifar100_distill.get_config(
      f'teacher={t_name},student={s_name},method=reviewkd')
  config_checks.check(config)
  d = objective.create(config, 100, (32, 32, 3))
  variables, loss = trace_loss(d, (32, 32, 3))
  assert loss.shape == ()
  levels = min(d.student.num_stages, d.teacher.num_stages) + 1
  assert sorted(variables['params']['reviewkd']) == [
      f'abf{i}' for i in range(levels)]


def test_published_weight_per_pair():
  """mdistiller's reviewkd.yaml: 5 for resnet32x4 -> resnet8x4; its default
  1 elsewhere; CE 1, warm-up 20 epochs."""
  get = lambda t, s: cifar100_distill.get_config(
      f'teacher={t},student={s},method=reviewkd')
  config = get('resnet32x4', 'resnet8x4')
  assert (config.loss.reviewkd, config.loss.ce,
          config.reviewkd.warmup_epochs) == (5.0, 1.0, 20.0)
  assert get('resnet56', 'resnet20').loss.reviewkd == 1.0


def test_levels_reproduce_mdistillers_config_for_its_pair():
  """resnet32x4 -> resnet8x4: the fusion's shapes are mdistiller's
  CFG.REVIEWKD (OUT_SHAPES 32, 16, 8, 1; OUT_CHANNELS and IN_CHANNELS 64,
  128, 256, 256; middle width min(512, 256))."""
  config = cifar100_distill.get_config(
      'teacher=resnet32x4,student=resnet8x4,method=reviewkd')
  fusion = objective.create(config, 100, (32, 32, 3)).adapter('reviewkd')
  assert fusion.out_shapes == ((64, 32), (128, 16), (256, 8), (256, 1))
  assert fusion.mid_channels == 256
  d = objective.create(config, 100, (32, 32, 3))
  feats = objective.feature_shapes(d.student, (32, 32, 3))
  s_names, _ = reviewkd_abf.levels(
      feats, objective.feature_shapes(d.teacher, (32, 32, 3)))
  assert [feats[n].shape[-1] for n in s_names] == [64, 128, 256, 256]
