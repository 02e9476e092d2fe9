"""Tests for the model zoo: sizes, shapes, `tail` and the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import models

# Trainable parameters for 100 classes and 3-channel input; the same counts as
# the PyTorch RepDistiller models.
_PARAM_COUNTS = {
    'resnet8': 83_892,
    'resnet14': 181_108,
    'resnet20': 278_324,
    'resnet32': 472_756,
    'resnet44': 667_188,
    'resnet56': 861_620,
    'resnet110': 1_736_564,
    'resnet8x4': 1_233_540,
    'resnet32x4': 7_433_860,
    'wrn_16_1': 180_916,
    'wrn_16_2': 703_284,
    'wrn_40_1': 569_780,
    'wrn_40_2': 2_255_156,
}

_SMALL_MODELS = ('resnet8', 'resnet20', 'resnet8x4', 'wrn_16_1', 'wrn_16_2')


def _abstract_variables(model, shape=(2, 32, 32, 3)):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def _num_params(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_model_names_cover_zoo():
  # The other families are tested in test_models_zoo.py.
  assert set(_PARAM_COUNTS) <= set(models.MODEL_NAMES)


def test_derived_lists_come_from_the_registry():
  """MODEL_NAMES and IMAGENET_MODELS are the registry's rows."""
  assert models.MODEL_NAMES == tuple(sorted(models.MODELS))
  assert models.IMAGENET_MODELS == tuple(
      name for name in models.MODEL_NAMES if models.MODELS[name].imagenet)


@pytest.mark.parametrize('name', models.MODEL_NAMES)
def test_every_registry_model_has_the_interface(name):
  """(logits, features) with stem, stage1..S, pre_logits; float32 logits;
  tail(features[k], start=k) gives the logits' shape for every k."""
  model = models.create_model(name, num_classes=10)
  variables = _abstract_variables(model)

  def run(v, x):
    logits, features = model.apply(v, x, train=False)
    tails = [model.apply(v, features['stem' if k == 0 else f'stage{k}'],
                         start=k, train=False, method='tail')
             for k in range(model.num_stages + 1)]
    return logits, features, tails

  logits, features, tails = jax.eval_shape(
      run, variables, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  assert model.num_stages >= 1
  stages = range(1, model.num_stages + 1)
  preact = {f'preact_stage{k}' for k in stages} & set(features)
  assert preact in (set(), {f'preact_stage{k}' for k in stages})
  assert set(features) == {'stem', 'pre_logits', *preact, *(
      f'stage{k}' for k in stages)}
  assert all(h.ndim == 4 and h.shape[0] == 2
             for k, h in features.items() if k != 'pre_logits')
  assert features['pre_logits'].ndim == 2
  assert (logits.shape, logits.dtype) == ((2, 10), jnp.float32)
  assert [t.shape for t in tails] == [(2, 10)] * (model.num_stages + 1)
  assert all(x.dtype == jnp.float32
             for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name', sorted(_PARAM_COUNTS))
def test_param_count(name):
  model = models.create_model(name, num_classes=100)
  variables = _abstract_variables(model)
  assert _num_params(variables['params']) == _PARAM_COUNTS[name]
  assert all(x.dtype == jnp.float32
             for x in jax.tree.leaves(variables['params']))


@pytest.mark.parametrize('name, expected', [
    ('resnet20', {'stem': (32, 32, 16), 'stage1': (32, 32, 16),
                  'stage2': (16, 16, 32), 'stage3': (8, 8, 64),
                  'pre_logits': (64,)}),
    ('resnet32x4', {'stem': (32, 32, 32), 'stage1': (32, 32, 64),
                    'stage2': (16, 16, 128), 'stage3': (8, 8, 256),
                    'pre_logits': (256,)}),
    ('wrn_40_2', {'stem': (32, 32, 16), 'stage1': (32, 32, 32),
                  'stage2': (16, 16, 64), 'stage3': (8, 8, 128),
                  'pre_logits': (128,)}),
])
def test_feature_shapes(name, expected):
  model = models.create_model(name, num_classes=100)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = _abstract_variables(model)
  logits, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert model.num_stages == 3
  assert logits.shape == (2, 100) and logits.dtype == jnp.float32
  assert {k: v.shape[1:] for k, v in features.items()
          if not k.startswith('preact_')} == expected
  assert {k: v.shape[1:] for k, v in features.items()
          if k.startswith('preact_')} == {
              f'preact_stage{k}': expected[f'stage{k}'] for k in (1, 2, 3)}


# mdistiller's pre-ReLU features (its `preact_feats`) and the BN before each
# stage's ReLU (`get_bn_before_relu`), by family.
_PREACT_MODELS = ('resnet8', 'wrn_16_1', 'vgg8', 'ResNet50', 'resnet18')


@pytest.mark.parametrize('name', _PREACT_MODELS)
def test_preact_features_are_the_maps_before_the_relu(name):
  """ReLU of 'preact_stage<k>' is the map the network goes on with (stage k's
  output; for the pre-activation WRN, the next block's activated input), the
  named BN is the one that produced it."""
  model = models.create_model(name, num_classes=10)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  variables = {'params': variables['params'], 'batch_stats': jax.tree.map(
      lambda a: a + rng.uniform(0.1, 0.5, a.shape).astype(np.float32),
      variables['batch_stats'])}
  _, features = model.apply(variables, x, train=False)
  for k in range(1, model.num_stages + 1):
    path = model.apply(variables, k, method='preact_bn_path')
    stats = variables['batch_stats']
    for key in path:
      stats = stats[key]
    pre = np.asarray(features[f'preact_stage{k}'])
    assert pre.shape[-1] == stats['mean'].shape[0]
    if name.startswith('wrn'):
      nxt = (features[f'stage{k}'] - stats['mean']) / np.sqrt(
          stats['var'] + 1e-5)
      params = variables['params']
      for key in path:
        params = params[key]
      np.testing.assert_allclose(
          pre, nxt * params['scale'] + params['bias'], rtol=1e-4, atol=1e-5)
    else:
      np.testing.assert_allclose(np.maximum(pre, 0), features[f'stage{k}'],
                                 rtol=1e-6, atol=1e-6)
      assert np.any(pre < 0)


@pytest.mark.parametrize('name', ['resnet8', 'wrn_16_1'])
def test_classify_is_the_fc_of_the_pooled_vector(name):
  """`classify` on the model's own 'pre_logits' gives its logits, and is
  x W + b of the fc in float64 on any other vector."""
  model = models.create_model(name, num_classes=10)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  logits, features = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(
      model.apply(variables, features['pre_logits'], method='classify'),
      logits)
  v = rng.standard_normal(features['pre_logits'].shape).astype(np.float32)
  fc = variables['params']['fc']
  expected = (v.astype(np.float64) @ np.asarray(fc['kernel'], np.float64)
              + np.asarray(fc['bias'], np.float64))
  got = model.apply(variables, v, method='classify')
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_models_without_preact_features_say_so():
  """MobileNetV2 returns no pre-ReLU features (nor does mdistiller's); the
  ShuffleNets return them but name no BN before them, as mdistiller."""
  for name in ('MobileNetV2', 'ShuffleV1', 'ShuffleV2'):
    model = models.create_model(name, num_classes=10)
    _, features = jax.eval_shape(
        lambda v, x, m=model: m.apply(v, x, train=False),
        _abstract_variables(model), jax.ShapeDtypeStruct((2, 32, 32, 3),
                                                         jnp.float32))
    has = any(k.startswith('preact_') for k in features)
    assert has == name.startswith('Shuffle')
    with pytest.raises(NotImplementedError,
                       match='not supported' if has else 'no pre-ReLU'):
      model.preact_bn_path(1)


@pytest.mark.parametrize('name', ['ShuffleV1', 'ShuffleV2'])
def test_shufflenet_preact_is_mdistillers(name):
  """ShuffleV1: ReLU of the pre-ReLU map is the stage output; ShuffleV2:
  mdistiller's unshuffled concatenation, whose ReLU shuffled by 2 is the
  stage output."""
  model = models.create_model(name, num_classes=10)
  x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(
      np.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  _, features = model.apply(variables, x, train=True,
                            mutable=['batch_stats'])[0]
  for k in (1, 2, 3):
    relu = np.maximum(np.asarray(features[f'preact_stage{k}']), 0)
    if name == 'ShuffleV2':
      c = relu.shape[-1]
      relu = relu.reshape(2, *relu.shape[1:3], 2, c // 2).swapaxes(
          -1, -2).reshape(relu.shape)
    np.testing.assert_allclose(relu, features[f'stage{k}'], rtol=1e-6,
                               atol=1e-6)
