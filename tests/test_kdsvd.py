"""KDSVD (RepDistiller): the loss and its gradient against a float64 numpy
port of the reference code; the method's term, its pair check and a few
training steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import losses
from adain_kd_jax.methods import objective
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import term_inputs
from tests.conftest import train_a_few_steps

# The zoo's stage outputs of resnet32x4 -> resnet8x4 (both 64, 128, 256
# channels at 32, 16, 8 pixels), at batch 4.
STAGES = ((4, 32, 32, 64), (4, 16, 16, 128), (4, 8, 8, 256))


# --- float64 numpy port of RepDistiller's distiller_zoo/KDSVD.py (NCHW) ----

def _np_normalize(x, axis, eps=1e-12):
  """torch's F.normalize."""
  return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def _np_removenan(x):
  return np.where(np.isfinite(x), x, 0.0)


def _np_svd(feat, n):
  """KDSVD.svd: torch.svd of the (H*H, C) matrix of each example."""
  b, c, h, _ = feat.shape
  x = feat.reshape(b, c, h * h).transpose(0, 2, 1)
  u, s, vh = np.linalg.svd(x, full_matrices=False)
  v = vh.transpose(0, 2, 1)  # torch.svd returns V, not V^H.
  # The sign LAPACK gives each vector is arbitrary; the loss fixes it (each
  # vector's entries sum to >= 0), and so does the port.
  v = v * np.where(v.sum(1, keepdims=True) < 0, -1.0, 1.0)
  u, s, v = _np_removenan(u), _np_removenan(s), _np_removenan(v)
  return (_np_normalize(u[:, :, :n], 1), _np_normalize(s[:, :n], 1),
          _np_normalize(v[:, :, :n], 1))


def _np_align_rsv(a, b):
  """KDSVD.align_rsv."""
  cosine = a.transpose(0, 2, 1) @ b
  max_abs_cosine = np.max(np.abs(cosine), axis=1, keepdims=True)
  mask = np.where(max_abs_cosine == np.abs(cosine), np.sign(cosine), 0.0)
  return a @ mask, b


def _np_kdsvd(g_s, g_t, k=1):
  """KDSVD.forward, summed as RepDistiller's loops.py does."""
  v_sb = v_tb = None
  out = []
  for i, (f_s, f_t) in enumerate(zip(g_s, g_t)):
    _, s_t, v_t = _np_svd(f_t, k)
    _, _, v_s = _np_svd(f_s, k + 3)
    v_s, v_t = _np_align_rsv(v_s, v_t)
    s_t = s_t[:, None]
    v_t, v_s = v_t * s_t, v_s * s_t
    if i > 0:
      s_rbf = np.exp(-(v_s[:, :, None] - v_sb[:, None]) ** 2 / 8)
      t_rbf = np.exp(-(v_t[:, :, None] - v_tb[:, None]) ** 2 / 8)
      l2loss = (s_rbf - t_rbf) ** 2
      out.append(np.where(np.isfinite(l2loss), l2loss, 0.0).sum())
    v_tb, v_sb = v_t, v_s
  return sum(l / g_s[0].shape[0] for l in out)


def _nchw(fs):
  return [np.transpose(f, (0, 3, 1, 2)) for f in fs]


def _inputs(seed, shapes=STAGES):
  rng = np.random.default_rng(seed)
  pair = []
  for _ in range(2):
    pair.append([np.maximum(rng.normal(size=s), 0.0) + 0.1 *
                 rng.normal(size=s) for s in shapes])
  return pair


def _jax_loss(k=1):
  return lambda s, t: losses.kdsvd_loss(list(s), list(t), k)


@pytest.mark.parametrize('k', [1, 2])
def test_kdsvd_matches_the_float64_reference(k):
  """float64 in: the reference's value to float64 rounding; float32 in:
  to float32's (k 1 published, k 2 the general alignment)."""
  f_s, f_t = _inputs(k)
  expected = _np_kdsvd(_nchw(f_s), _nchw(f_t), k)
  assert expected > 0
  with jax.enable_x64():
    got64 = jax.jit(_jax_loss(k))([jnp.asarray(f) for f in f_s],
                                  [jnp.asarray(f) for f in f_t])
    assert got64.dtype == jnp.float64
    np.testing.assert_allclose(got64, expected, rtol=1e-10)
  got32 = jax.jit(_jax_loss(k))([f.astype(np.float32) for f in f_s],
                                [f.astype(np.float32) for f in f_t])
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, expected, rtol=2e-3)


def test_kdsvd_gradient_matches_the_float64_reference():
  """The float64 gradient (JAX's SVD derivative) in three random directions
  against central differences of the numpy port (step 1e-6); the teacher's
  maps get none."""
  shapes = ((4, 16, 16, 32), (4, 8, 8, 64))
  f_s, f_t = _inputs(7, shapes)
  with jax.enable_x64():
    g_s, g_t = jax.grad(_jax_loss(), argnums=(0, 1))(
        [jnp.asarray(f) for f in f_s], [jnp.asarray(f) for f in f_t])
  assert not any(np.any(np.asarray(g)) for g in g_t)
  rng = np.random.default_rng(3)
  h = 1e-6
  for _ in range(3):
    v = [rng.normal(size=f.shape) for f in f_s]
    plus = _np_kdsvd(_nchw([f + h * d for f, d in zip(f_s, v)]), _nchw(f_t))
    minus = _np_kdsvd(_nchw([f - h * d for f, d in zip(f_s, v)]), _nchw(f_t))
    numeric = (plus - minus) / (2 * h)
    analytic = sum(np.sum(np.asarray(g) * d) for g, d in zip(g_s, v))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_kdsvd_alignment_and_bad_shapes():
  """The aligned student vector is the teacher's up to nothing when the
  maps are equal (loss 0); unequal channel counts name the stage."""
  f_s, _ = _inputs(5, STAGES[1:])
  assert float(losses.kdsvd_loss(f_s, f_s)) == pytest.approx(0.0, abs=1e-7)
  with pytest.raises(ValueError, match='KDSVD at stage 2'):
    losses.kdsvd_loss([np.ones((2, 4, 4, 3)), np.ones((2, 2, 2, 5))],
                      [np.ones((2, 4, 4, 3)), np.ones((2, 2, 2, 6))])
  with pytest.raises(ValueError, match='KDSVD needs'):
    losses.kdsvd_loss([np.ones((2, 4, 4, 3))], [np.ones((2, 4, 4, 3))])


IMAGE_SHAPE = (28, 28, 1)


def _config(model='resnet8', teacher='resnet8'):
  config = smoke.get_config()
  config.update(model=model, teacher=teacher, method='kdsvd')
  return config


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32)}


def test_the_term_is_the_reference_over_every_stage():
  """kdsvd = the port on the two networks' stage outputs, CE + 1 x kdsvd."""
  distiller = objective.create(_config(), 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [('ce', 1.0),
                                                    ('kdsvd', 1.0)]
  got = term_inputs(distiller, _batch(0))
  names = ('stage1', 'stage2', 'stage3')
  expected = _np_kdsvd(
      _nchw([np.asarray(got['f_s'][n], np.float64) for n in names]),
      _nchw([np.asarray(got['f_t'][n], np.float64) for n in names]))
  np.testing.assert_allclose(got['metrics']['kdsvd'], expected, rtol=2e-3)
  np.testing.assert_allclose(got['loss'], got['metrics']['ce']
                             + got['metrics']['kdsvd'], rtol=1e-6)


def test_a_pair_of_unequal_widths_is_refused_in_one_line():
  """resnet8 (16, 32, 64 channels) under resnet8x4 (64, 128, 256): one line
  naming the method, both models and their widths."""
  with pytest.raises(ValueError) as error:
    objective.create(_config('resnet8', 'resnet8x4'), 10, IMAGE_SHAPE)
  message = str(error.value)
  assert '\n' not in message
  for part in ("config.method='kdsvd'", "config.model='resnet8'",
               '(16, 32, 64)', "config.teacher='resnet8x4'",
               '(64, 128, 256)'):
    assert part in message, message


def test_kdsvd_trains_a_few_steps():
  """Four jitted steps on eight simulated devices (the step that hung
  before eigh ran one matrix per LAPACK call on the CPU): finite, and the
  KDSVD term and the total loss go down on a repeated batch."""
  values, totals, _ = train_a_few_steps(
      _config(), 'kdsvd', _batch(1), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(values)) and values[-1] < values[0], values
  assert totals[-1] < totals[0], totals
