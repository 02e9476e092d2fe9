"""FT (RepDistiller's factor transfer): the factor loss, value and gradient,
the paraphraser, its reconstruction loss and the translator against float64
numpy ports of the reference; the term's inputs and first-phase loss, the
modules on every CIFAR-100 pair, and a few training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import ft_modules
from adain_kd_jax.methods import objective
from adain_kd_jax.methods.relational_terms import last_stage
from adain_kd_jax.training import config_checks
from configs import cifar100_distill
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import term_inputs
from tests.conftest import train_a_few_steps
from tests.conftest import trace_loss

# The zoo's factors: resnet32x4 -> resnet8x4, both last stages 8x8, the
# teacher's 256 channels at rate 0.5 (128); batch 16.
N, H, K = 16, 8, 128


# --- float64 numpy ports of RepDistiller's FT.py and models/util.py --------

def as64(a):
  return np.asarray(a, np.float64)


def _np_pool(f, o):
  """torch's adaptive_avg_pool2d of (N, H, W, C) to (N, o, o, C)."""
  def axis(x, ax):
    s = x.shape[ax]
    bins = [np.take(x, range(i * s // o, -(-(i + 1) * s // o)), axis=ax)
            .mean(axis=ax, keepdims=True) for i in range(o)]
    return np.concatenate(bins, axis=ax)
  return axis(axis(f, 1), 2)


def _np_factor(f):
  """FactorTransfer.factor (p1 = 2): F.normalize(f.pow(2).mean(1).view(N,
  -1)), channels last here."""
  v = (f ** 2).mean(-1).reshape(f.shape[0], -1)
  return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _np_ft(f_s, f_t):
  """FactorTransfer.factor_loss (p2 = 1), the larger map pooled first."""
  if f_s.shape[1] > f_t.shape[1]:
    f_s = _np_pool(f_s, f_t.shape[1])
  elif f_s.shape[1] < f_t.shape[1]:
    f_t = _np_pool(f_t, f_s.shape[1])
  return np.abs(_np_factor(f_s) - _np_factor(f_t)).mean()


def _np_conv(x, w, b):
  """nn.Conv2d(k 3, stride 1, padding 1), weight (O, I, 3, 3), NHWC."""
  n, h, wd, _ = x.shape
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, wd, w.shape[0])) + b
  for dy in range(3):
    for dx in range(3):
      out += p[:, dy:dy + h, dx:dx + wd] @ w[:, :, dy, dx].T
  return out


def _np_conv_transpose(x, w, b):
  """nn.ConvTranspose2d(k 3, stride 1, padding 1), weight (I, O, 3, 3):
  each input pixel scatters w into the full map, then padding 1 is cut."""
  n, h, wd, _ = x.shape
  full = np.zeros((n, h + 2, wd + 2, w.shape[1]))
  for dy in range(3):
    for dx in range(3):
      full[:, dy:dy + h, dx:dx + wd] += x @ w[:, :, dy, dx]
  return full[:, 1:-1, 1:-1] + b


def _np_leaky(x):
  return np.where(x > 0, x, 0.1 * x)


def _np_bn_train(x, gamma, beta, eps=1e-5):
  """BatchNorm2d in training mode: batch statistics, biased variance."""
  mean = x.mean((0, 1, 2))
  var = ((x - mean) ** 2).mean((0, 1, 2))
  return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _np_paraphraser(x, enc, dec):
  """Paraphraser.forward (use_bn False): (factor, rec)."""
  for w, b in enc:
    x = _np_leaky(_np_conv(x, w, b))
  factor = x
  for w, b in dec:
    x = _np_leaky(_np_conv_transpose(x, w, b))
  return factor, x


def _np_translator(x, layers):
  """Translator.forward (use_bn True, BatchNorm in training mode)."""
  for w, b, gamma, beta in layers:
    x = _np_leaky(_np_bn_train(_np_conv(x, w, b), gamma, beta))
  return x


def _torch_layers(rng, widths, c_in, transpose=False):
  """Random torch-layout (weight, bias) of three 3x3 layers."""
  out = []
  for c_out in widths:
    shape = (c_in, c_out, 3, 3) if transpose else (c_out, c_in, 3, 3)
    out.append((rng.normal(size=shape) / np.sqrt(9 * c_in),
                rng.normal(0, 0.1, c_out)))
    c_in = c_out
  return out


def _flax_stack(layers):
  """The flax params of `ft_modules._Stack` for torch-layout `layers`: a
  conv's (O, I, 3, 3) and a transposed conv's (I, O, 3, 3) both go to
  (3, 3, dim 1, dim 0)."""
  return {f'conv{i}': {'kernel': jnp.asarray(w.transpose(2, 3, 1, 0)),
                       'bias': jnp.asarray(b)}
          for i, (w, b) in enumerate(layers)}


# --- the factor loss ---------------------------------------------------------

@pytest.mark.parametrize('h_s,h_t', [(H, H), (H, 4), (2, 4), (5, 3)])
def test_ft_loss_matches_the_float64_reference(h_s, h_t):
  """float64, eager and jit: the value to float64 rounding, on equal maps
  and with either map pooled (8 -> 4 as vgg13 -> vgg8's 4x4, 5 -> 3 with
  overlapping bins)."""
  rng = np.random.default_rng(h_s * 10 + h_t)
  f_s = rng.normal(size=(N, h_s, h_s, K))
  f_t = np.maximum(rng.normal(size=(N, h_t, h_t, K)), 0.0)
  expected = _np_ft(f_s, f_t)
  with jax.enable_x64():
    for fn in (losses.ft_loss, jax.jit(losses.ft_loss)):
      got = fn(jnp.asarray(f_s), jnp.asarray(f_t))
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(got, expected, rtol=1e-12)
  np.testing.assert_allclose(losses.ft_loss(f_s.astype(np.float32),
                                            f_t.astype(np.float32)),
                             expected, rtol=1e-5)


@pytest.mark.parametrize('h_s,h_t', [(H, H), (H, 4)])
def test_ft_loss_gradient_matches_the_float64_reference(h_s, h_t):
  """The float64 gradient with respect to each factor in three random
  directions against central differences of the port (step 1e-6)."""
  rng = np.random.default_rng(7 + h_t)
  f_s = rng.normal(size=(N, h_s, h_s, K))
  f_t = rng.normal(size=(N, h_t, h_t, K))
  with jax.enable_x64():
    g_s, g_t = jax.grad(losses.ft_loss, argnums=(0, 1))(jnp.asarray(f_s),
                                                        jnp.asarray(f_t))
  h = 1e-6
  for _ in range(3):
    v_s, v_t = rng.normal(size=f_s.shape), rng.normal(size=f_t.shape)
    numeric_s = (_np_ft(f_s + h * v_s, f_t) - _np_ft(f_s - h * v_s, f_t)) / (
        2 * h)
    numeric_t = (_np_ft(f_s, f_t + h * v_t) - _np_ft(f_s, f_t - h * v_t)) / (
        2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(g_s) * v_s), numeric_s,
                               rtol=1e-7)
    np.testing.assert_allclose(np.sum(np.asarray(g_t) * v_t), numeric_t,
                               rtol=1e-7)


def test_ft_factor_and_bad_shapes():
  """The factor has unit rows; a batch mismatch or a 2-D input names FT."""
  f = np.random.default_rng(3).normal(size=(4, 3, 3, 5))
  np.testing.assert_allclose(np.linalg.norm(losses.ft_factor(f), axis=1),
                             1.0, rtol=1e-6)
  with pytest.raises(ValueError, match='FT'):
    losses.ft_loss(np.ones((4, 2, 2, 3)), np.ones((5, 2, 2, 3)))
  with pytest.raises(ValueError, match='FT'):
    losses.ft_loss(np.ones((4, 3)), np.ones((4, 3)))
  with pytest.raises(ValueError, match='FT'):
    losses.ft_reconstruction_loss(np.ones((4, 2, 2, 3)),
                                  np.ones((4, 2, 2, 4)))


# --- the paraphraser, its reconstruction loss, the translator ----------------

def test_paraphraser_and_reconstruction_match_the_float64_reference():
  """float64: the paraphraser's factor and reconstruction (convolutions,
  transposed convolutions, LeakyReLU 0.1) and the first phase's MSE to
  float64 rounding, with the MSE's gradient to the reconstruction."""
  rng = np.random.default_rng(4)
  c = 16
  k = ft_modules.factor_channels(c)
  enc = _torch_layers(rng, (c, k, k), c)
  dec = _torch_layers(rng, (k, c, c), k, transpose=True)
  f_t = np.maximum(rng.normal(size=(4, H, H, c)), 0.0)
  factor, rec = _np_paraphraser(f_t, enc, dec)
  with jax.enable_x64():
    params = {'encoder': _flax_stack(enc), 'decoder': _flax_stack(dec)}
    module = ft_modules.Paraphraser(c, dtype=jnp.float64)
    got_factor, got_rec = jax.jit(module.apply)({'params': params},
                                                jnp.asarray(f_t))
    loss, g = jax.value_and_grad(losses.ft_reconstruction_loss)(
        got_rec, jnp.asarray(f_t))
  assert got_factor.shape == (4, H, H, k) and got_rec.shape == f_t.shape
  np.testing.assert_allclose(got_factor, factor, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(got_rec, rec, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(loss, np.mean((rec - f_t) ** 2), rtol=1e-12)
  np.testing.assert_allclose(g, 2 * (rec - f_t) / rec.size, rtol=1e-10)


def test_translator_matches_the_float64_reference():
  """float64: the translator (convolutions, BatchNorm in training mode,
  LeakyReLU 0.1) from the student's 12 channels to the factor's 8."""
  rng = np.random.default_rng(5)
  k = ft_modules.factor_channels(16)
  convs = _torch_layers(rng, (12, k, k), 12)
  bns = [(rng.uniform(0.5, 1.5, b.shape), rng.normal(0, 0.1, b.shape))
         for _, b in convs]
  f_s = rng.normal(size=(4, H, H, 12))
  expected = _np_translator(f_s, [c + b for c, b in zip(convs, bns)])
  with jax.enable_x64():
    params = _flax_stack(convs)
    for i, (gamma, beta) in enumerate(bns):
      params[f'bn{i}'] = {'scale': jnp.asarray(gamma),
                          'bias': jnp.asarray(beta)}
    stats = {f'bn{i}': {'mean': jnp.zeros(len(g)), 'var': jnp.ones(len(g))}
             for i, (g, _) in enumerate(bns)}
    got, _ = ft_modules.Translator(16, dtype=jnp.float64).apply(
        {'params': {'encoder': params}, 'batch_stats': {'encoder': stats}},
        jnp.asarray(f_s), train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)


def test_modules_start_as_torch_initialises_them():
  """Kernels and biases within U(+-1/sqrt(fan_in)), fan_in 9 x the torch
  weight's dimension 1; biases not zero; BatchNorm only in the
  translator."""
  p = ft_modules.Paraphraser(16).init(jax.random.key(0),
                                      jnp.zeros((1, 4, 4, 16)))['params']
  t = ft_modules.Translator(16).init(jax.random.key(1),
                                     jnp.zeros((1, 4, 4, 12)), train=False)
  assert set(p['encoder']) == {'conv0', 'conv1', 'conv2'}
  assert set(t['params']['encoder']) == {'conv0', 'conv1', 'conv2', 'bn0',
                                         'bn1', 'bn2'}
  convs = [*p['encoder'].values(), *p['decoder'].values(),
           *(v for n, v in t['params']['encoder'].items()
             if n.startswith('conv'))]
  for conv in convs:
    # flax's (3, 3, dim 1, dim 0) of torch's weight: fan_in is 9 x axis -2.
    bound = 1 / np.sqrt(9 * conv['kernel'].shape[-2])
    assert np.max(np.abs(conv['kernel'])) <= bound
    assert np.max(np.abs(conv['kernel'])) > 0.8 * bound
    assert 0 < np.max(np.abs(conv['bias'])) <= bound


# --- the method: term, first-phase loss, modules per pair, training ----------

IMAGE_SHAPE = (28, 28, 1)


def _config():
  """resnet8 (64 channels at its last stage) from resnet8 (random
  teacher variables of conftest): a factor of 32 channels."""
  config = smoke.get_config()
  config.update(model='resnet8', teacher='resnet8', method='ft')
  return config


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32)}


def test_term_and_init_loss_are_the_references_on_its_inputs():
  """RepDistiller's recipe (CE 1, FT 200), the paraphraser trained first;
  the term is `losses.ft_loss` on the translator's factor of the student's
  last stage and the paraphraser's factor of the teacher's (float64 port
  on those), and `init_loss` the port's reconstruction MSE."""
  config = _config()
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [('ce', 1.0),
                                                     ('ft', 200.0)]
  term = distiller.term['ft']
  assert term.init_trains == ('ft_paraphraser',)
  got = term_inputs(distiller, _batch(0))
  variables, f_s, f_t = got['variables'], got['f_s'], got['f_t']
  assert 'ft_paraphraser' not in variables['batch_stats']
  factor_s, _ = distiller.adapter('ft').apply(
      {'params': variables['params']['ft'],
       'batch_stats': variables['batch_stats']['ft']},
      f_s['stage3'], train=True, mutable=['batch_stats'])
  factor_t, rec = distiller.adapter('ft_paraphraser').apply(
      {'params': variables['params']['ft_paraphraser']}, f_t['stage3'])
  assert factor_s.shape == factor_t.shape == (16, 7, 7, 32)
  np.testing.assert_allclose(got['metrics']['ft'],
                             losses.ft_loss(factor_s, factor_t), rtol=1e-5)
  np.testing.assert_allclose(got['metrics']['ft'],
                             _np_ft(as64(factor_s), as64(factor_t)),
                             rtol=1e-4)
  p = variables['params']['ft_paraphraser']

  def torch_layers(stack):
    """flax's (3, 3, dim 1, dim 0) back to torch's weight layout."""
    return [(as64(c['kernel']).transpose(3, 2, 0, 1), as64(c['bias']))
            for c in stack.values()]
  _, np_rec = _np_paraphraser(
      as64(f_t['stage3']), torch_layers(p['encoder']),
      torch_layers(p['decoder']))
  np.testing.assert_allclose(rec, np_rec, rtol=1e-4, atol=1e-5)
  out, _ = distiller._outputs(  # pylint: disable=protected-access
      variables['params'],
      {'batch_stats': variables['batch_stats'], 'term_state': {},
       'teacher': got['teacher_vars']},
      {'image': got['images'], 'label': _batch(0)['label']},
      jax.random.key(0), 0)
  np.testing.assert_allclose(term.init_loss(out),
                             np.mean((np_rec - as64(f_t['stage3'])) ** 2),
                             rtol=1e-4)


def test_gradients_reach_the_modules_each_phase_trains():
  """The main loss reaches the student and the translator, never the
  paraphraser (RepDistiller's main-phase optimiser leaves it out); the
  first phase's loss reaches the paraphraser alone."""
  distiller = objective.create(_config(), 10, IMAGE_SHAPE)
  variables = distiller.init(jax.random.key(0),
                             jnp.zeros((1, *IMAGE_SHAPE)))
  batch = _batch(1)
  nondiff = {'batch_stats': variables['batch_stats'], 'term_state': {},
             'teacher': make_teacher_variables()}
  batch = {'image': batch['image'].astype(np.float32) / 255.0,
           'label': batch['label']}
  term = distiller.term['ft']

  def loss(params, main):
    out, _ = distiller._outputs(  # pylint: disable=protected-access
        params, nondiff, batch, jax.random.key(0), 0)
    return term(out) if main else term.init_loss(out)

  def reached(grads):
    return {key: any(np.any(np.asarray(g)) for g in jax.tree.leaves(sub))
            for key, sub in grads.items()}
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  main = reached(grad(variables['params'], True))
  init = reached(grad(variables['params'], False))
  assert main == {'student': True, 'ft': True, 'ft_paraphraser': False}
  assert init == {'student': False, 'ft': False, 'ft_paraphraser': True}


def test_method_trains_a_few_steps():
  """Four jitted steps on a repeated batch at lr 0.01: finite, the term and
  the total go down, the translator moves."""
  config = _config()
  config.init_epochs = 0.0  # The main phase alone (the phase: below).
  # FT's weight 200 on an L1 loss: at the smoke config's lr 0.05 the first
  # steps on one repeated batch overshoot (the term rises, then falls).
  config.learning_rate = 0.01
  values, totals, moved = train_a_few_steps(
      config, 'ft', _batch(2), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(values + totals)), (values, totals)
  assert values[-1] < values[0], values
  assert totals[-1] < totals[0], totals
  assert all(moved)


def test_first_phase_trains_the_paraphraser_alone():
  """Four steps of the first phase: the loss is the reconstruction, which
  goes down; the translator (params['ft']) does not move."""
  config = _config()
  config.init_epochs = 0.4  # 4 steps of 10 an epoch.
  _, totals, moved = train_a_few_steps(
      config, 'ft', _batch(2), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(totals)), totals
  assert totals[-1] < totals[0], totals
  assert moved and not any(moved)


def _reference_param_counts(c_s, c_t):
  """RepDistiller's Paraphraser(t_shape) and Translator(s_shape, t_shape)
  parameter counts: each 3x3 (transposed) conv 9 c_in c_out + c_out, each
  BatchNorm2d 2 c_out (the translator's only)."""
  k = int(c_t * 0.5)

  def conv(c_in, c_out):
    return 9 * c_in * c_out + c_out
  paraphraser = (conv(c_t, c_t) + conv(c_t, k) + conv(k, k) + conv(k, k)
                 + conv(k, c_t) + conv(c_t, c_t))
  translator = (conv(c_s, c_s) + 2 * c_s + conv(c_s, k) + 2 * k
                + conv(k, k) + 2 * k)
  return paraphraser, translator


@pytest.mark.parametrize('row', cifar100_distill.TABLE,
                         ids=['-'.join(r) for r in cifar100_distill.TABLE])
def test_every_cifar100_pair_traces(row):
  """Each pair of the table: the loss traces, with the paraphraser and the
  translator of the reference's parameter counts on the pair's last stage
  maps."""
  t_name, s_name = row
  config = cifar100_distill.get_config(
      f'teacher={t_name},student={s_name},method=ft')
  config_checks.check(config)
  d = objective.create(config, 100, (32, 32, 3))
  variables, loss = trace_loss(d, (32, 32, 3))
  assert loss.shape == ()
  c_s, c_t = (feats[last_stage(feats)].shape[-1] for feats in (
      objective.feature_shapes(net, (32, 32, 3))
      for net in (d.student, d.teacher)))
  counts = {key: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(
      variables['params'][key])) for key in ('ft_paraphraser', 'ft')}
  assert (counts['ft_paraphraser'],
          counts['ft']) == _reference_param_counts(c_s, c_t)
