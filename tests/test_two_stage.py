"""FSP and AB (RepDistiller's `distiller_zoo/FSP.py`, `AB.py`): the losses
and their gradients against float64 numpy ports of the reference code, the
terms' features and connectors, the pairs they refuse, and the first phase
that trains them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import objective
from configs import cifar100_distill
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import term_inputs
from tests.conftest import trace_loss

IMAGE_SHAPE = (28, 28, 1)
# resnet32x4 -> resnet8x4 (N = 2): FSP's maps (the stem and every stage),
# AB's pre-ReLU stage maps (the connectors are identities there).
FSP_MAPS = ((2, 32, 32, 32), (2, 32, 32, 64), (2, 16, 16, 128),
            (2, 8, 8, 256))
AB_MAPS = ((2, 32, 32, 64), (2, 16, 16, 128), (2, 8, 8, 256))


# --- float64 numpy ports of RepDistiller (NCHW) -----------------------------

def _np_pool(x, h):
  """F.adaptive_avg_pool2d of NCHW to (h, h), for sizes that divide."""
  n, c, big_h, big_w = x.shape
  return x.reshape(n, c, h, big_h // h, h, big_w // h).mean(axis=(3, 5))


def _np_unpool(g, big_h):
  """The gradient of `_np_pool` back to the (big_h, big_h) input."""
  k = big_h // g.shape[2]
  return np.repeat(np.repeat(g, k, axis=2), k, axis=3) / (k * k)


def _np_fsp_pair(bot, top):
  """FSP.compute_fsp for one pair: (pooled bot, pooled top, fsp)."""
  b_h, t_h = bot.shape[2], top.shape[2]
  if b_h > t_h:
    bot = _np_pool(bot, t_h)
  elif b_h < t_h:
    top = _np_pool(top, b_h)
  b = bot[:, None].reshape(bot.shape[0], 1, bot.shape[1], -1)
  t = top[:, :, None].reshape(top.shape[0], top.shape[1], 1, -1)
  return bot, top, (b * t).mean(-1)


def _np_fsp(g_s, g_t):
  """FSP.forward summed (RepDistiller's init: `sum(loss_group)`)."""
  pairs = lambda g: [_np_fsp_pair(g[i], g[i + 1])[2]
                     for i in range(len(g) - 1)]
  return sum(((s - t) ** 2).mean() for s, t in zip(pairs(g_s), pairs(g_t)))


def _np_fsp_grad(g_s, g_t):
  """The analytic gradient of `_np_fsp` in the student's maps."""
  grads = [np.zeros_like(g) for g in g_s]
  for i in range(len(g_s) - 1):
    bot, top, fsp_s = _np_fsp_pair(g_s[i], g_s[i + 1])
    fsp_t = _np_fsp_pair(g_t[i], g_t[i + 1])[2]
    d_fsp = 2 * (fsp_s - fsp_t) / fsp_s.size  # (N, C_top, C_bot)
    hw = bot.shape[2] * bot.shape[3]
    d_bot = np.einsum('ntb,nthw->nbhw', d_fsp, top) / hw
    d_top = np.einsum('ntb,nbhw->nthw', d_fsp, bot) / hw
    for j, d in ((i, d_bot), (i + 1, d_top)):
      big = g_s[j].shape[2]
      grads[j] += d if d.shape[2] == big else _np_unpool(d, big)
  return grads


def _np_ab_masks(s, t, margin=1.0):
  return (s > -margin) & (t <= 0), (s <= margin) & (t > 0)


def _np_ab(g_s, g_t, margin=1.0):
  """ABLoss.forward summed (RepDistiller's init: `sum(loss_group)`)."""
  n, bsz = len(g_s), g_s[0].shape[0]
  losses_ = []
  for s, t in zip(g_s, g_t):
    m1, m2 = _np_ab_masks(s, t, margin)
    losses_.append(np.abs((s + margin) ** 2 * m1 + (s - margin) ** 2 * m2)
                   .sum())
  losses_ = [2 ** (i - n + 1) * l for i, l in enumerate(losses_)]
  return sum(l / bsz / 1000 * 3 for l in losses_)


def _np_ab_grad(g_s, g_t, margin=1.0):
  """The analytic gradient of `_np_ab` (the masks constant almost
  everywhere)."""
  n, bsz = len(g_s), g_s[0].shape[0]
  out = []
  for i, (s, t) in enumerate(zip(g_s, g_t)):
    m1, m2 = _np_ab_masks(s, t, margin)
    out.append((2 * (s + margin) * m1 + 2 * (s - margin) * m2)
               * 2 ** (i - n + 1) / bsz / 1000 * 3)
  return out


def _nchw(x):
  return np.transpose(np.asarray(x), (0, 3, 1, 2))


def _maps(shapes, seed):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=s) for s in shapes], [rng.normal(size=s)
                                                for s in shapes]


@pytest.mark.parametrize('name, shapes, fn, np_fn, np_grad', [
    ('fsp', FSP_MAPS, losses.fsp_loss, _np_fsp, _np_fsp_grad),
    ('ab', AB_MAPS, losses.ab_loss, _np_ab, _np_ab_grad)])
def test_loss_and_gradient_match_the_float64_reference(name, shapes, fn,
                                                       np_fn, np_grad):
  """Value and gradient to float64 rounding on the zoo's shapes (float32:
  to its own); no gradient to the teacher."""
  del name
  f_s, f_t = _maps(shapes, 1)
  ref_s, ref_t = [_nchw(x) for x in f_s], [_nchw(x) for x in f_t]
  expected = np_fn(ref_s, ref_t)
  with jax.enable_x64():
    args = ([jnp.asarray(x) for x in f_s], [jnp.asarray(x) for x in f_t])
    got = jax.jit(fn)(*args)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    g_s, g_t = jax.grad(fn, argnums=(0, 1))(*args)
  for got_g, ref_g in zip(g_s, np_grad(ref_s, ref_t)):
    np.testing.assert_allclose(_nchw(got_g), ref_g, rtol=1e-10, atol=1e-16)
  assert not any(np.any(np.asarray(g)) for g in g_t)
  got32 = jax.jit(fn)([x.astype(np.float32) for x in f_s],
                      [x.astype(np.float32) for x in f_t])
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, expected, rtol=1e-4)


def test_bad_inputs_raise():
  """Lists that do not pair, maps of other channels or shapes name the
  method."""
  x = np.ones((2, 4, 4, 3))
  with pytest.raises(ValueError, match='FSP: 1 student maps and 2 teacher'):
    losses.fsp_loss([x], [x, x])
  with pytest.raises(ValueError, match='FSP: student map 1'):
    losses.fsp_loss([x, x], [x, np.ones((2, 4, 4, 5))])
  with pytest.raises(ValueError, match='AB: 2 student maps and 1 teacher'):
    losses.ab_loss([x, x], [x])
  with pytest.raises(ValueError, match='AB: student map'):
    losses.ab_loss([x], [np.ones((2, 2, 2, 3))])


def _config(method, model='resnet8', teacher='resnet8'):
  config = smoke.get_config()
  config.update(model=model, teacher=teacher, method=method)
  return config


@pytest.mark.parametrize('method, model, teacher, match', [
    ('fsp', 'resnet8', 'resnet8x4',
     r"FSP pairs maps of the same channels: config\.model='resnet8' has "
     r'\[16, 16, 32, 64\]'),
    ('fsp', 'resnet8', 'MobileNetV2',
     r"config\.model='resnet8' has 3 stages"),
    ('ab', 'MobileNetV2', 'vgg8', r"AB needs the student's maps .*"
     r"config\.model='MobileNetV2'"),
    ('ab', 'vgg8', 'MobileNetV2', r'AB needs the teacher')])
def test_pairs_it_cannot_build_are_refused(method, model, teacher, match):
  """One line saying why: channels that differ (FSP, as the reference's
  check), stage counts that differ, networks without pre-ReLU maps (AB)."""
  with pytest.raises(ValueError, match=match) as e:
    objective.create(_config(method, model, teacher), 10, IMAGE_SHAPE)
  assert '\n' not in str(e.value)


def _batch(seed=0, n=16):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, n).astype(np.int32)}


def test_terms_read_the_references_features():
  """FSP on the stem's output and every stage's (`feat[:-1]`); AB on the
  pre-ReLU stage maps (`feat[1:-1]`, preact) through its connectors:
  ConvReg without ReLU where the shapes differ (resnet8 -> resnet8x4)."""
  got = term_inputs(objective.create(_config('fsp'), 10, IMAGE_SHAPE),
                    _batch())
  f_s, f_t = got['f_s'], got['f_t']
  names = ('stem', 'stage1', 'stage2', 'stage3')
  np.testing.assert_allclose(
      got['metrics']['fsp'],
      _np_fsp([_nchw(f_s[n]) for n in names], [_nchw(f_t[n]) for n in names]),
      rtol=1e-5)
  config = _config('ab', teacher='resnet8x4')
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  layout = distiller.adapter('ab').layout
  assert [(n, c, identity) for n, c, _, _, identity in layout] == [
      ('preact_stage1', 64, False), ('preact_stage2', 128, False),
      ('preact_stage3', 256, False)]
  variables = distiller.init(jax.random.key(0),
                             np.zeros((1, *IMAGE_SHAPE), np.float32))
  assert 'relu' not in str(jax.tree.structure(variables['params']['ab']))
  same = objective.create(_config('ab'), 10, IMAGE_SHAPE)
  assert all(identity for *_, identity in same.adapter('ab').layout)
  got = term_inputs(same, _batch())
  names = ('preact_stage1', 'preact_stage2', 'preact_stage3')
  np.testing.assert_allclose(
      got['metrics']['ab'],
      _np_ab([_nchw(got['f_s'][n]) for n in names],
             [_nchw(got['f_t'][n]) for n in names]), rtol=1e-5)


@pytest.mark.parametrize('method', ['fsp', 'ab'])
def test_every_cifar100_pair_traces_or_is_refused_in_one_line(method):
  """Each pair of the CIFAR-100 table traces (its trained connectors
  counted), or is refused in one line, as RepDistiller refuses it."""
  traced, refused = {}, []
  for teacher, student in cifar100_distill.TABLE:
    config = cifar100_distill.get_config(
        f'teacher={teacher},student={student},method={method}')
    try:
      distiller = objective.create(config, 100, (32, 32, 3))
    except ValueError as e:
      assert '\n' not in str(e)
      refused.append((teacher, student))
      continue
    variables, loss = trace_loss(distiller, (32, 32, 3))
    assert loss.shape == ()
    traced[(teacher, student)] = sum(
        x.size for x in jax.tree.leaves(variables['params'].get('ab', {})))
  assert ('wrn_40_2', 'wrn_16_2') in traced and ('resnet32x4',
                                                  'resnet8x4') in traced
  if method == 'ab':  # Identities where the shapes agree, as Connector.
    assert traced[('resnet32x4', 'resnet8x4')] == 0
    assert traced[('wrn_40_2', 'wrn_40_1')] > 0
  else:
    assert ('resnet32x4', 'ShuffleV1') in refused


@pytest.mark.parametrize('method, teacher', [('fsp', 'resnet8'),
                                             ('ab', 'resnet8x4')])
def test_the_first_phase_trains_and_its_loss_decreases(method, teacher):
  """A few steps of the first phase on mock data: the term's loss (the
  optimised loss there) is finite and decreases, then the main phase's
  loss is the cross-entropy."""
  # pylint: disable=g-import-not-at-top
  from tests.conftest import build_tiny_step
  from tests.conftest import one_step
  # pylint: enable=g-import-not-at-top
  config = _config(method, teacher=teacher)
  config.init_epochs = 0.6  # 6 steps of 10 an epoch.
  parts = build_tiny_step(config, IMAGE_SHAPE, total_steps=8)
  state, step = parts.init_state(jax.random.key(0)), one_step(
      parts.multi_step)
  teacher_vars, batch = make_teacher_variables(teacher), _batch()
  values = []
  for _ in range(7):
    state, metrics = step(state, teacher_vars, batch)
    values.append((float(metrics[method]), float(metrics['loss']),
                   float(metrics['ce'])))
  assert all(np.isfinite(values).ravel())
  assert [v for v, loss, _ in values[:6]] == [loss for _, loss, _ in
                                              values[:6]]
  assert values[5][0] < 0.9 * values[0][0]
  assert values[6][1] == values[6][2]
