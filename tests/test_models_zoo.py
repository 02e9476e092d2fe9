"""Tests for every model family, and the VGG, MobileNetV2, ShuffleNet and
bottleneck/ImageNet ResNets in particular.

The family tests (`tail`, train mode, other inputs, bfloat16) run the first
registry model of each family, so a new family is tested with no edit here.
Also checks every model of the PyTorch zoo's state dicts
(`tests/data/torch_state_dicts.json`) tensor by tensor against our parameters,
with the PyTorch -> Flax names of the model docstrings (as
`torch_import/key_maps.py` maps them).
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import models
from adain_kd_jax.torch_import import key_maps
from tests.conftest import first_of_each_family

# Trainable parameters for 3-channel input and 100 classes (1000 for the
# ImageNet ResNets); the same counts as the PyTorch models.
_PARAM_COUNTS = {
    'vgg8': 3_965_028,
    'vgg11': 9_277_284,
    'vgg13': 9_462_180,
    'vgg16': 14_774_436,
    'vgg19': 20_086_692,
    'MobileNetV2': 812_836,
    'ShuffleV1': 949_258,
    'ShuffleV2': 1_355_528,
    'ResNet50': 23_705_252,
    'resnet18': 11_689_512,
    'resnet34': 21_797_672,
    'resnet50': 25_557_032,
}


def _family_inputs():
  """The first registry model of each family -> the input of its runs."""
  # Small inputs keep the big ResNets' runs cheap.
  small = {'ResNet50': (2, 16, 16, 3)}
  return {name: small.get(name, (2, 64, 64, 3) if name in
                          models.IMAGENET_MODELS else (2, 32, 32, 3))
          for name in first_of_each_family()}


_FAMILY_INPUTS = _family_inputs()

# The parameter names and shapes of the benchmark's PyTorch state dicts
# (tests/data/README.md).
_TORCH_STATE_DICTS = (pathlib.Path(__file__).resolve().parent / 'data' /
                      'torch_state_dicts.json')


def _num_classes(name):
  return 1000 if name in models.IMAGENET_MODELS else 100


@functools.cache
def _abstract_variables(name, shape=None):
  """Shapes of the variables of `name` for its usual classes and input."""
  shape = shape or ((2, 224, 224, 3) if name in models.IMAGENET_MODELS
                    else (2, 32, 32, 3))
  model = models.create_model(name, num_classes=_num_classes(name))
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _random_variables(model, x, rng):
  """Random variables for `model` on `x`, drawn with numpy (nothing compiled).

  Kernels are normal with variance 1/fan_in; BN scales, biases and running
  statistics are away from their 1/0 init, so that BN in eval mode is not near
  identity and, in train mode, no running mean stays at 0 (as it would after
  a linear map of a zero-mean BN output).
  """
  def draw(path, v):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0, np.prod(v.shape[:-1])**-0.5, v.shape)
    elif name == 'var':
      value = rng.uniform(0.5, 2.0, v.shape)
    elif name == 'scale':
      value = 1 + 0.2 * rng.standard_normal(v.shape)
    else:  # Biases and running means.
      value = 0.2 * rng.standard_normal(v.shape)
    return np.asarray(value, v.dtype)

  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  return jax.tree.map_with_path(draw, shapes)


@functools.cache
def _family_run(name):
  """One jitted run of a family's model: eval forward, every tail, train.

  One compilation per model keeps the file fast on CPU (op-by-op dispatch
  would compile each op shape separately, several times slower).
  """
  model = models.create_model(name, num_classes=10)
  rng = np.random.default_rng(0)
  x = rng.standard_normal(_FAMILY_INPUTS[name]).astype(np.float32)
  variables = _random_variables(model, x, rng)

  @jax.jit
  def run(variables, x):
    logits, features = model.apply(variables, x, train=False)
    tails = [
        model.apply(variables, features['stem' if k == 0 else f'stage{k}'],
                    start=k, train=False, method='tail')
        for k in range(model.num_stages + 1)]
    train_out, updates = model.apply(
        variables, x, train=True, mutable=['batch_stats'])
    return logits, tails, train_out[0], updates['batch_stats']

  return model, variables, jax.device_get(run(variables, x))


@pytest.mark.parametrize('name', sorted(_PARAM_COUNTS))
def test_param_count(name):
  """Trainable parameters as in PyTorch, all float32."""
  variables = _abstract_variables(name)
  assert _num_params(variables['params']) == _PARAM_COUNTS[name]
  assert all(x.dtype == jnp.float32
             for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name, shape, stages, expected', [
    ('vgg8', (32, 32), 4,
     {'stem': (32, 32, 64), 'stage1': (16, 16, 128), 'stage2': (8, 8, 256),
      'stage3': (4, 4, 512), 'stage4': (4, 4, 512), 'pre_logits': (512,)}),
    ('vgg13', (28, 28), 4,
     {'stem': (28, 28, 64), 'stage1': (14, 14, 128), 'stage2': (7, 7, 256),
      'stage3': (3, 3, 512), 'stage4': (3, 3, 512), 'pre_logits': (512,)}),
    ('MobileNetV2', (32, 32), 4,
     {'stem': (16, 16, 16), 'stage1': (16, 16, 12), 'stage2': (8, 8, 16),
      'stage3': (4, 4, 48), 'stage4': (2, 2, 160), 'pre_logits': (1280,)}),
    ('ShuffleV1', (32, 32), 3,
     {'stem': (32, 32, 24), 'stage1': (16, 16, 240), 'stage2': (8, 8, 480),
      'stage3': (4, 4, 960), 'pre_logits': (960,)}),
    ('ShuffleV2', (32, 32), 3,
     {'stem': (32, 32, 24), 'stage1': (16, 16, 116), 'stage2': (8, 8, 232),
      'stage3': (4, 4, 464), 'pre_logits': (1024,)}),
    ('ResNet50', (32, 32), 4,
     {'stem': (32, 32, 64), 'stage1': (32, 32, 256), 'stage2': (16, 16, 512),
      'stage3': (8, 8, 1024), 'stage4': (4, 4, 2048), 'pre_logits': (2048,)}),
    ('resnet18', (224, 224), 4,
     {'stem': (56, 56, 64), 'stage1': (56, 56, 64), 'stage2': (28, 28, 128),
      'stage3': (14, 14, 256), 'stage4': (7, 7, 512), 'pre_logits': (512,)}),
    ('resnet50', (224, 224), 4,
     {'stem': (56, 56, 64), 'stage1': (56, 56, 256), 'stage2': (28, 28, 512),
      'stage3': (14, 14, 1024), 'stage4': (7, 7, 2048),
      'pre_logits': (2048,)}),
])
def test_feature_shapes(name, shape, stages, expected):
  """Feature maps at the benchmark's feature points; float32 logits."""
  model = models.create_model(name, num_classes=_num_classes(name))
  x = jax.ShapeDtypeStruct((2, *shape, 3), jnp.float32)
  variables = _abstract_variables(name, x.shape)
  logits, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert model.num_stages == stages
  assert logits.shape == (2, _num_classes(name))
  assert logits.dtype == jnp.float32
  assert {k: v.shape[1:] for k, v in features.items()
          if not k.startswith('preact_')} == expected
  preact = {k: v.shape[1:] for k, v in features.items()
            if k.startswith('preact_')}
  assert preact in ({}, {f'preact_stage{k}': expected[f'stage{k}']
                         for k in range(1, stages + 1)})


def test_vgg_pool_before_stage4_for_64x64():
  """RepDistiller's Tiny-ImageNet VGG pools once more before block 4."""
  model = models.vgg.vgg8(num_classes=200, pool_before_stage4=True)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  _, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert features['stage3'].shape[1:] == (8, 8, 512)
  assert features['stage4'].shape[1:] == (4, 4, 512)
  tail = jax.eval_shape(
      lambda v, h: model.apply(v, h, start=3, train=False, method='tail'),
      variables, features['stage3'])
  assert tail.shape == (2, 200)


def test_channel_shuffle_matches_pytorch_permutation():
  """NHWC shuffle == PyTorch's view/permute on NCHW, transposed."""
  x_nchw = np.arange(2 * 12 * 2 * 3, dtype=np.float32).reshape(2, 12, 2, 3)
  n, c, h, w = x_nchw.shape
  expected = x_nchw.reshape(n, 3, c // 3, h, w).transpose(0, 2, 1, 3, 4)
  expected = expected.reshape(n, c, h, w).transpose(0, 2, 3, 1)
  got = models.shufflenet.channel_shuffle(x_nchw.transpose(0, 2, 3, 1), 3)
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize('name', sorted(_FAMILY_INPUTS))
def test_tail_reproduces_logits(name):
  """tail(features[k], start=k) == logits for every k (eval mode)."""
  model, _, (logits, tails, _, _) = _family_run(name)
  assert logits.shape == (_FAMILY_INPUTS[name][0], 10)
  assert logits.dtype == np.float32
  assert np.all(np.isfinite(logits))
  assert 1e-2 < np.abs(logits).max() < 1e2
  assert len(tails) == model.num_stages + 1
  for k, tail_logits in enumerate(tails):
    np.testing.assert_allclose(tail_logits, logits, atol=1e-5, rtol=1e-5,
                               err_msg=f'start={k}')


@pytest.mark.parametrize('name', sorted(_FAMILY_INPUTS))
def test_train_mode_updates_every_batch_stat(name):
  """train=True uses batch statistics and updates every running stat."""
  _, variables, (logits, _, train_logits, new_stats) = _family_run(name)
  assert np.all(np.isfinite(train_logits))
  assert not np.allclose(train_logits, logits)
  old = jax.tree.leaves_with_path(variables['batch_stats'])
  new = jax.tree.leaves_with_path(new_stats)
  assert [path for path, _ in old] == [path for path, _ in new]
  unchanged = [jax.tree_util.keystr(path)
               for (path, a), (_, b) in zip(old, new) if np.allclose(a, b)]
  assert not unchanged


@pytest.mark.parametrize('name', sorted(_FAMILY_INPUTS))
def test_grey_28x28_input(name):
  """Input sizes other than the native one work (channels, H, W)."""
  model = models.create_model(name, num_classes=10)
  x = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  (logits, features), _ = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
      variables, x)
  assert logits.shape == (2, 10)
  assert all(features[f'stage{k}'].shape[1] >= 1
             for k in range(1, model.num_stages + 1))


@pytest.mark.parametrize('name', sorted(_FAMILY_INPUTS))
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
  """dtype sets the compute dtype only."""
  model = models.create_model(name, num_classes=10, dtype=jnp.bfloat16)
  x = jax.ShapeDtypeStruct(_FAMILY_INPUTS[name], jnp.float32)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))
  logits, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.dtype == jnp.float32
  assert features[f'stage{model.num_stages}'].dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32
             for v in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name, start', [
    ('ShuffleV1', -1), ('ShuffleV2', 4), ('vgg8', 5), ('MobileNetV2', -1),
    ('resnet18', 5)])
def test_tail_start_out_of_range(name, start):
  """tail rejects a start outside 0..S."""
  model = models.create_model(name, num_classes=_num_classes(name))
  variables = _abstract_variables(name, _FAMILY_INPUTS.get(name))
  h = jax.ShapeDtypeStruct((2, 4, 4, 8), jnp.float32)
  with pytest.raises(ValueError, match=rf'0\.\.{model.num_stages}'):
    jax.eval_shape(
        lambda v, h: model.apply(v, h, start=start, train=False,
                                 method='tail'), variables, h)


def _torch_state_dicts():
  with open(_TORCH_STATE_DICTS) as f:
    return json.load(f)['models']


def test_the_zoo_is_in_the_registry():
  """The models of the state dicts and of the PyTorch parameter counts are
  registry models with a PyTorch layout; the registry may hold more."""
  zoo = set(_torch_state_dicts()) | set(_PARAM_COUNTS)
  assert zoo <= set(key_maps.TORCH_MODELS) <= set(models.MODEL_NAMES)


def test_every_torch_model_has_its_param_count():
  """Our trainable parameters == the state dict's minus BN statistics."""
  for name, state_dict in _torch_state_dicts().items():
    trainable = sum(
        int(np.prod(shape)) for key, shape in state_dict.items()
        if not key.endswith(('running_mean', 'running_var',
                             'num_batches_tracked')))
    assert _num_params(_abstract_variables(name)['params']) == trainable, name


def test_every_torch_tensor_has_its_flax_counterpart():
  """A bijection between the state dicts and our variables, with shapes."""
  for name, state_dict in _torch_state_dicts().items():
    ours = {
        (collection, tuple(p.key for p in path)): tuple(leaf.shape)
        for collection, tree in _abstract_variables(name).items()
        for path, leaf in jax.tree.leaves_with_path(tree)}
    theirs = {}
    for key, shape in state_dict.items():
      if not key.endswith('num_batches_tracked'):
        collection, path, flax_shape = key_maps.torch_key_to_flax(
            name, key, shape)
        theirs[collection, path] = flax_shape
    assert theirs == ours, name
