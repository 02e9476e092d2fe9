"""FitNet's hint regressor (RepDistiller ConvReg) in methods/connectors.py."""

import jax
import numpy as np
import pytest

from adain_kd_jax.methods import connectors


def _rand(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize('s_hw,t_hw,layout', [
    ((8, 8), (8, 8), ('conv', (1, 1), (1, 1), 0)),  # equal: 1x1
    ((16, 16), (8, 8), ('conv', (3, 3), (2, 2), 1)),  # student twice
    ((4, 4), (8, 8), ('transpose', (4, 4), (2, 2), 1)),  # student half
    ((10, 9), (8, 8), ('conv', (3, 2), (1, 1), 0)),  # larger, not twice
], ids=['equal', 'twice', 'half', 'larger'])
def test_hint_layout_is_convreg(s_hw, t_hw, layout):
  """RepDistiller ConvReg's choice of convolution, case by case."""
  assert connectors.hint_layout('stage2', s_hw, t_hw) == layout


@pytest.mark.parametrize('s_hw,t_hw', [((2, 2), (8, 8)), ((5, 5), (8, 8))])
def test_hint_layout_error_names_the_stage(s_hw, t_hw):
  """A student map smaller than the teacher's, not half of it: an error."""
  with pytest.raises(ValueError,
                     match=r'FitNet hint at stage3: .* config\.points'):
    connectors.hint_layout('stage3', s_hw, t_hw)


@pytest.mark.parametrize('s_hw,t_hw', [
    ((8, 8), (8, 8)), ((16, 16), (8, 8)), ((4, 4), (8, 8)), ((9, 9), (8, 8)),
], ids=['equal', 'twice', 'half', 'larger'])
def test_hint_regressor_output_is_the_teacher_shape(s_hw, t_hw):
  """conv (with bias) + BN + ReLU, to the teacher's (H, W, C)."""
  x = _rand((2, *s_hw, 3), seed=0)
  module = connectors.HintRegressor(5, t_hw, name='stage2')
  variables = module.init(jax.random.key(0), x, train=False)
  assert set(variables['params']) == {'conv', 'bn'}
  assert set(variables['params']['conv']) == {'kernel', 'bias'}
  out, updates = module.apply(variables, x, train=True,
                              mutable=['batch_stats'])
  assert out.shape == (2, *t_hw, 5)
  assert float(out.min()) >= 0.0  # ReLU.
  assert set(updates['batch_stats']['bn']) == {'mean', 'var'}


def test_hint_regressors_keep_one_per_point():
  """HintRegressors: {name: output}, params under each point's name."""
  hints = connectors.HintRegressors(shapes=(('stage1', 4, 8, 8),
                                            ('stage2', 6, 4, 4)))
  feats = {'stage1': _rand((2, 4, 4, 3), 1), 'stage2': _rand((2, 8, 8, 3), 2),
           'stage3': _rand((2, 2, 2, 3), 3)}
  variables = hints.init(jax.random.key(0), feats, train=False)
  assert set(variables['params']) == {'stage1', 'stage2'}
  out = hints.apply(variables, feats, train=False)
  assert {k: v.shape for k, v in out.items()} == {
      'stage1': (2, 8, 8, 4), 'stage2': (2, 4, 4, 6)}


def _torch_convreg(torch, s_shape, t_shape):
  """RepDistiller's models/util.py ConvReg (use_relu=True), NCHW shapes."""
  nn = torch.nn
  _, s_c, s_h, s_w = s_shape
  _, t_c, t_h, t_w = t_shape
  if s_h == 2 * t_h:
    conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
  elif s_h * 2 == t_h:
    conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
  else:
    conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
  return nn.Sequential(conv, nn.BatchNorm2d(t_c), nn.ReLU())


@pytest.mark.parametrize('s_hw,t_hw', [
    ((8, 8), (8, 8)), ((16, 16), (8, 8)), ((4, 4), (8, 8)), ((10, 9), (8, 8)),
], ids=['equal', 'twice', 'half', 'larger'])
def test_hint_regressor_matches_torch_convreg(s_hw, t_hw):
  """Same weights, same input: the same output as ConvReg in train mode.

  Also the initialisation: PyTorch's default U(+-1/sqrt(fan_in)) bound.
  """
  torch = pytest.importorskip('torch')
  x = _rand((2, *s_hw, 3), seed=4)
  module = connectors.HintRegressor(5, t_hw)
  variables = module.init(jax.random.key(1), x, train=False)
  conv = variables['params']['conv']
  ref = _torch_convreg(torch, (2, 3, *s_hw), (2, 5, *t_hw))
  kernel = np.asarray(conv['kernel'])
  # Flax kernels are (kh, kw, in, out), or (kh, kw, out, in) for the
  # transposed conv with transpose_kernel=True; torch's (out, in, kh, kw)
  # and (in, out, kh, kw): the same permutation in both cases.
  weight = kernel.transpose(3, 2, 0, 1)
  assert weight.shape == tuple(ref[0].weight.shape)
  # PyTorch's fan_in: the weight's dims 1.. (out * kh * kw when transposed).
  bound = 1.0 / np.sqrt(ref[0].weight[0].numel())
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound
  with torch.no_grad():
    ref[0].weight.copy_(torch.from_numpy(np.array(weight)))
    ref[0].bias.copy_(torch.from_numpy(np.array(conv['bias'])))
  ref.train()
  expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
  got, _ = module.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(np.asarray(got), expected.transpose(0, 2, 3, 1),
                             rtol=1e-4, atol=1e-5)
