"""PyTorch checkpoint import: key mapping, strictness, numerical equality.

The key-mapping tests need no torch (state dicts of numpy arrays with the
zoo's shapes from `tests/data/torch_state_dicts.json`); the tests that read .pth
files or compare logits with PyTorch skip without it
(`pip install -r requirements-torch.txt`).
"""

import argparse
import functools
import json
import os
import pathlib
import sys

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import models
from adain_kd_jax.torch_import import convert as torch_convert
from adain_kd_jax.torch_import import key_maps
from adain_kd_jax.torch_import import zoo as import_torch
from adain_kd_jax.training import checkpoints

# The parameter names and shapes of the benchmark's PyTorch state dicts
# (tests/data/README.md).
_TORCH_STATE_DICTS = (pathlib.Path(__file__).resolve().parent / 'data' /
                      'torch_state_dicts.json')
# Zoo models whose fake state dicts get random values (checked value by
# value); the others are zeros (shapes only).
_RANDOM_VALUES = ('resnet8', 'wrn_16_1', 'vgg8', 'MobileNetV2', 'ShuffleV1')
# trainable parameters of torchvision's models with 1000 classes.
_TORCHVISION_PARAMS = {'resnet18': 11_689_512, 'resnet34': 21_797_672,
                       'resnet50': 25_557_032}


@functools.cache
def _zoo_shapes():
  with open(_TORCH_STATE_DICTS) as f:
    return json.load(f)['models']


def _fake_state_dict(shapes, seed=None):
  """Zeros (or small random values) of the given shapes; int64 counters."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in shapes.items():
    if key.endswith('num_batches_tracked'):
      out[key] = np.array(7, np.int64)
    elif seed is None:
      out[key] = np.zeros(shape, np.float32)
    else:
      out[key] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
  return out


def _torchvision_shapes(name, num_classes=1000):
  """The state-dict keys and shapes of torchvision's resnet18/34/50."""
  bottleneck = name == 'resnet50'
  sizes = (2, 2, 2, 2) if name == 'resnet18' else (3, 4, 6, 3)
  shapes = {}

  def conv(key, cout, cin, k):
    shapes[f'{key}.weight'] = [cout, cin, k, k]

  def bn(key, c):
    for t in ('weight', 'bias', 'running_mean', 'running_var'):
      shapes[f'{key}.{t}'] = [c]
    shapes[f'{key}.num_batches_tracked'] = []

  conv('conv1', 64, 3, 7)
  bn('bn1', 64)
  cin = 64
  for s, n in enumerate(sizes, 1):
    planes = 64 * 2**(s - 1)
    cout = planes * (4 if bottleneck else 1)
    for b in range(n):
      p = f'layer{s}.{b}'
      if bottleneck:
        layers = [(planes, cin, 1), (planes, planes, 3), (cout, planes, 1)]
      else:
        layers = [(planes, cin, 3), (planes, planes, 3)]
      for i, (o, c, k) in enumerate(layers, 1):
        conv(f'{p}.conv{i}', o, c, k)
        bn(f'{p}.bn{i}', o)
      if b == 0 and (s > 1 or cin != cout):
        conv(f'{p}.downsample.0', cout, cin, 1)
        bn(f'{p}.downsample.1', cout)
      cin = cout
  shapes['fc.weight'] = [num_classes, cin]
  shapes['fc.bias'] = [num_classes]
  return shapes


@functools.cache
def _expected(name, num_classes, channels=3):
  """Our variables' shapes, computed independently of the importer."""
  model = models.create_model(name, num_classes)
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 40, 40, channels)), train=False))


def _assert_matches_model(variables, name, num_classes, channels=3):
  expected = _expected(name, num_classes, channels)
  assert (jax.tree.structure(variables) == jax.tree.structure(expected))
  for (path, got), want in zip(jax.tree.leaves_with_path(variables),
                               jax.tree.leaves(expected)):
    assert isinstance(got, np.ndarray), jax.tree_util.keystr(path)
    assert (got.shape, got.dtype) == (want.shape, want.dtype), (
        jax.tree_util.keystr(path))


def _check_values(name, state_dict, variables):
  """Every tensor landed, transposed, at the Flax leaf the mapping names."""
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked'):
      continue
    collection, path, _ = key_maps.torch_key_to_flax(name, key,
                                                         value.shape)
    got = variables[collection]
    for k in path:
      got = got[k]
    want = (value.transpose(2, 3, 1, 0) if value.ndim == 4 else
            value.T if value.ndim == 2 else value)
    np.testing.assert_array_equal(got, want, err_msg=key)


@pytest.mark.parametrize('name', sorted(_zoo_shapes()))
def test_convert_every_zoo_state_dict(name):
  """Each zoo state dict converts to exactly our model's variables."""
  shapes = _zoo_shapes()[name]
  seed = 0 if name in _RANDOM_VALUES else None
  state_dict = _fake_state_dict(shapes, seed)
  variables = torch_convert.convert(name, state_dict)
  _assert_matches_model(variables, name, 100)
  # Every tensor but the counters consumed, each by one variable.
  used = [k for k in shapes if not k.endswith('num_batches_tracked')]
  assert len(jax.tree.leaves(variables)) == len(used)
  if seed is not None:
    _check_values(name, state_dict, variables)


@pytest.mark.parametrize('name', sorted(_TORCHVISION_PARAMS))
def test_convert_torchvision_resnets(name):
  """torchvision's key names (conv1, layer{s}.{b}, downsample, fc) convert."""
  assert name in models.IMAGENET_MODELS
  shapes = _torchvision_shapes(name, num_classes=10)
  trainable = sum(int(np.prod(s)) for k, s in
                  _torchvision_shapes(name).items()
                  if not k.endswith(('running_mean', 'running_var',
                                     'num_batches_tracked')))
  assert trainable == _TORCHVISION_PARAMS[name]
  seed = 0 if name == 'resnet18' else None
  state_dict = _fake_state_dict(shapes, seed)
  variables = torch_convert.convert(name, state_dict)
  _assert_matches_model(variables, name, 10)
  if seed is not None:
    _check_values(name, state_dict, variables)


def test_flax_to_torch_key_inverts_the_mapping():
  """The names and shapes in error messages are the state dict's own."""
  for name, shapes in _zoo_shapes().items():
    for key, shape in shapes.items():
      if not key.endswith('num_batches_tracked'):
        collection, path, flax_shape = key_maps.torch_key_to_flax(
            name, key, shape)
        assert key_maps.flax_to_torch_key(name, collection, path) == key
        assert key_maps.to_torch_shape(flax_shape) == tuple(shape), key


def test_brief_list_counts_what_it_leaves_out():
  """Error messages list five keys, then how many more there are."""
  assert torch_convert.brief_list(['a', 'b']) == 'a, b'
  assert torch_convert.brief_list(list('abcdefg')) == (
      'a, b, c, d, e, ... (2 more)')


def _resnet8():
  return _fake_state_dict(_zoo_shapes()['resnet8'], seed=1)


def test_wrapped_and_data_parallel_state_dicts():
  """{'model': ...}, {'state_dict': ...} and 'module.' prefixes are unwrapped."""
  state_dict = _resnet8()
  want = torch_convert.convert('resnet8', state_dict)
  prefixed = {f'module.{k}': v for k, v in state_dict.items()}
  for wrapped in ({'epoch': 240, 'model': prefixed, 'accuracy': 71.2,
                   'optimizer': {'state': {}}},
                  {'state_dict': state_dict}, prefixed):
    got = torch_convert.convert('resnet8', wrapped)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_num_classes_and_channels_come_from_the_state_dict():
  """A 10-class, 1-channel resnet8 converts to a model of those sizes."""
  shapes = dict(_zoo_shapes()['resnet8'], **{
      'conv1.weight': [16, 1, 3, 3], 'fc.weight': [10, 64], 'fc.bias': [10]})
  variables = torch_convert.convert('resnet8', _fake_state_dict(shapes))
  _assert_matches_model(variables, 'resnet8', 10, channels=1)


def test_missing_key_is_an_error():
  """A missing tensor is named, with its shape and the arch."""
  state_dict = _resnet8()
  del state_dict['layer2.0.downsample.1.running_var']
  with pytest.raises(ValueError, match=r'resnet8 .*1 key\(s\) missing '
                     r'\[layer2\.0\.downsample\.1\.running_var \(32,\)\], '
                     r'0 unexpected'):
    torch_convert.convert('resnet8', state_dict)


def test_unexpected_key_is_an_error():
  """A tensor without a counterpart is named, with its shape and the arch."""
  state_dict = _resnet8()
  state_dict['layer1.0.conv3.weight'] = np.zeros((16, 16, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r'resnet8 .*0 key\(s\) missing \[\], '
                     r'1 unexpected \[layer1\.0\.conv3\.weight '
                     r'\(16, 16, 3, 3\)\]'):
    torch_convert.convert('resnet8', state_dict)


def test_another_architecture_is_an_error():
  """A resnet20 state dict is not a resnet8; the first few keys are listed."""
  state_dict = _fake_state_dict(_zoo_shapes()['resnet20'])
  with pytest.raises(ValueError, match=r'a resnet8 with 100 classes: 0 key'
                     r'.*60 unexpected \[layer1\.1\.conv1\.weight.*'
                     r'\.\.\. \(55 more\)\]'):
    torch_convert.convert('resnet8', state_dict)


def test_wrong_shape_is_an_error():
  """A tensor of the wrong shape is named with both shapes, in PyTorch order."""
  state_dict = _resnet8()
  state_dict['layer3.0.conv2.weight'] = np.zeros((64, 32, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r'layer3\.0\.conv2\.weight has shape '
                     r'\(64, 32, 3, 3\), expected \(64, 64, 3, 3\)'):
    torch_convert.convert('resnet8', state_dict)


def test_unknown_arch_is_an_error():
  with pytest.raises(ValueError, match='Unknown model .resnet9.'):
    torch_convert.convert('resnet9', _resnet8())


def test_a_model_without_a_pytorch_layout_is_an_error(monkeypatch):
  """A registry model of a family the key maps lack has nothing to import."""
  monkeypatch.setitem(models.MODELS, 'plain8', models.ModelInfo(
      models.MODELS['resnet8'].build, 'plain'))
  with pytest.raises(ValueError, match=r"'plain8' \(family 'plain'\) has no "
                     r'PyTorch layout to import\. Models with one: '):
    torch_convert.convert('plain8', _resnet8())


def test_load_state_dict_without_torch_says_what_to_install(monkeypatch):
  """Without torch, the ImportError names requirements-torch.txt."""
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ImportError, match='requirements-torch.txt'):
    import_torch.load_state_dict('whatever.pth')


def test_cli_rejects_a_percentage(tmp_path):
  """test_accuracy is a fraction; RepDistiller's percentages are refused."""
  with pytest.raises(ValueError, match='divide'):
    import_torch.import_checkpoint('resnet8', 'x.pth', str(tmp_path / 'o'),
                                   test_accuracy=73.5)


# ----------------------------------------------------------------------------
# With PyTorch: .pth files and numerical equality.
# ----------------------------------------------------------------------------

# name -> (classes, NCHW input shape) of the numerical checks.
_NUMERICS = {
    'resnet8': (100, (2, 3, 32, 32)),
    'wrn_16_2': (100, (2, 3, 32, 32)),
    'vgg8': (100, (2, 3, 32, 32)),
    'MobileNetV2': (100, (2, 3, 32, 32)),
    'ShuffleV1': (100, (2, 3, 32, 32)),
    'ShuffleV2': (100, (2, 3, 32, 32)),
    'resnet18': (10, (2, 3, 64, 64)),
}


@pytest.fixture(scope='module')
def torch_zoo():
  pytest.importorskip('torch')
  from tests import torch_zoo as zoo  # pylint: disable=g-import-not-at-top
  return zoo


@functools.cache
def _flax_logits_fn(name, num_classes):
  model = models.create_model(name, num_classes)
  return jax.jit(lambda v, x: model.apply(v, x, train=False)[0])


@pytest.fixture(scope='module')
def torch_checkpoints(torch_zoo, tmp_path_factory):
  """name -> (.pth path, input NCHW, PyTorch eval logits), made on demand."""
  import torch  # pylint: disable=g-import-not-at-top
  directory = tmp_path_factory.mktemp('pth')
  cache = {}

  def get(name):
    if name not in cache:
      num_classes, shape = _NUMERICS[name]
      model = torch_zoo.randomize_(torch_zoo.create(name, num_classes))
      x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
      with torch.no_grad():
        logits = model(x).numpy()
      path = str(directory / f'{name}.pth')
      if name == 'resnet8':
        # As RepDistiller's *_last.pth: wrapped, with its argparse options,
        # from a DataParallel model.
        torch.save({'opt': argparse.Namespace(model=name, epochs=240),
                    'model': {f'module.{k}': v
                              for k, v in model.state_dict().items()},
                    'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1}]}},
                   path)
      else:
        torch.save(model.state_dict(), path)
      cache[name] = (path, x.numpy(), logits)
    return cache[name]

  return get


@pytest.mark.parametrize('name', sorted(_NUMERICS))
def test_logits_match_pytorch(name, torch_checkpoints):
  """Imported weights give PyTorch's eval-mode logits (random weights and BN
  running statistics)."""
  path, x, want = torch_checkpoints(name)
  num_classes = _NUMERICS[name][0]
  state_dict = import_torch.load_state_dict(path)
  assert all(isinstance(v, np.ndarray) for v in state_dict.values())
  variables = torch_convert.convert(name, state_dict)
  got = np.asarray(_flax_logits_fn(name, num_classes)(
      variables, x.transpose(0, 2, 3, 1)))
  assert got.shape == want.shape == (x.shape[0], num_classes)
  assert want.std() > 0.1  # Not a degenerate network.
  print(f'{name}: max |logits diff| = {np.abs(got - want).max():.3g} '
        f'(logits std {want.std():.3g})')
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_reference_models_have_the_zoo_state_dicts(torch_zoo):
  """The PyTorch definitions of the tests have RepDistiller's keys/shapes."""
  for name in sorted(_NUMERICS):
    if name in _TORCHVISION_PARAMS:
      want = _torchvision_shapes(name, num_classes=100)
    else:
      want = _zoo_shapes()[name]
    got = {k: list(v.shape)
           for k, v in torch_zoo.create(name, 100).state_dict().items()}
    assert got == want, name


def test_cli_writes_a_loadable_teacher(torch_checkpoints, tmp_path, capsys):
  """`main` exports a teacher that load_teacher accepts, same logits."""
  path, x, want = torch_checkpoints('wrn_16_2')
  out = str(tmp_path / 'export')
  argv = flags.FLAGS(['import_torch', '--arch=wrn_16_2',
                       f'--checkpoint={path}', f'--out={out}',
                       '--test_accuracy=0.75'])
  try:
    import_torch.main(argv)
  finally:
    flags.FLAGS.unparse_flags()  # Back to unparsed defaults for other tests.
  assert f'wrote the teacher export to {out}' in capsys.readouterr().out
  meta = checkpoints.read_teacher_meta(out)
  assert {k: meta[k] for k in ('model', 'num_classes', 'dataset',
                               'image_shape', 'test_accuracy',
                               'imported_from', 'source')} == {
      'model': 'wrn_16_2', 'num_classes': 100, 'dataset': 'cifar100',
      'image_shape': [32, 32, 3], 'test_accuracy': 0.75,
      'imported_from': 'pytorch', 'source': os.path.abspath(path)}
  variables, _ = checkpoints.load_teacher(
      out, model='wrn_16_2', num_classes=100,
      abstract_variables=_expected('wrn_16_2', 100))
  got = _flax_logits_fn('wrn_16_2', 100)(variables, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cli_checks_classes_against_the_dataset(torch_checkpoints, tmp_path):
  """A 10-class ImageNet-layout checkpoint is not a CIFAR-100 teacher."""
  path, _, _ = torch_checkpoints('resnet18')
  with pytest.raises(ValueError, match='10 classes but cifar100 has 100'):
    import_torch.import_checkpoint('resnet18', path, str(tmp_path / 'o'))
  assert not os.listdir(tmp_path)


class Sneaky:
  """Any class: unpickling it could run code."""


def test_load_state_dict_refuses_pickled_objects(torch_zoo, tmp_path):
  """weights_only: a pickled custom object or a whole module is refused."""
  import torch  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'sneaky.pth')
  torch.save({'model': {'fc.weight': torch.zeros(2, 2)}, 'extra': Sneaky()},
             path)
  with pytest.raises(ValueError, match=r'Refusing to load .*pickles Python '
                     r'objects.*Sneaky'):
    import_torch.load_state_dict(path)
  torch.save(torch_zoo.create('resnet8', 10), path)
  with pytest.raises(ValueError, match='Refusing to load'):
    import_torch.load_state_dict(path)


def test_load_state_dict_rejects_non_tensors(torch_zoo, tmp_path):
  """Every entry of the state dict must be a tensor."""
  import torch  # pylint: disable=g-import-not-at-top
  del torch_zoo
  path = str(tmp_path / 'odd.pth')
  torch.save({'conv1.weight': torch.zeros(1), 'note': 'hello', 'n': 3}, path)
  with pytest.raises(ValueError, match=r'2 entr.* not tensors \[note \(str\), '
                     r'n \(int\)\]'):
    import_torch.load_state_dict(path)


def test_archive_imports_every_teacher_in_one_command(torch_checkpoints,
                                                      tmp_path):
  """mdistiller's cifar_teachers.tar layout, as downloaded: one command
  imports each teacher with the same logits and the published accuracy for
  the CRD table's, records the member it came from, and skips what is
  already there on a second run."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tarfile  # pylint: disable=g-import-not-at-top
  from tests.conftest import ROOT  # pylint: disable=g-import-not-at-top
  archive = tmp_path / 'cifar_teachers.tar'
  with tarfile.open(archive, 'w') as tar:
    for name in ('resnet8', 'wrn_16_2'):
      tar.add(torch_checkpoints(name)[0],
              arcname=f'cifar_teachers/{name}_vanilla/ckpt_epoch_240.pth')
    readme = tmp_path / 'README'
    readme.write_text('not a checkpoint')
    tar.add(readme, arcname='cifar_teachers/README')
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop('XLA_FLAGS', None)
  command = [sys.executable, '-m', 'adain_kd_jax.torch_import.zoo',
             f'--archive={archive}', '--out_dir=teachers/cifar100']
  proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.splitlines()[-1].startswith(
      f'2 teachers in {tmp_path}/teachers/cifar100; not in the archive: '
      'ResNet50, resnet110, resnet32x4, resnet56, vgg13, wrn_40_2')
  for name in ('resnet8', 'wrn_16_2'):
    out = str(tmp_path / 'teachers' / 'cifar100' / name)
    meta = checkpoints.read_teacher_meta(out)
    assert meta['source'] == (f'{archive}:cifar_teachers/{name}_vanilla/'
                              'ckpt_epoch_240.pth')
    assert meta['test_accuracy'] is None  # Not a teacher of the CRD table.
    _, x, want = torch_checkpoints(name)
    variables, _ = checkpoints.load_teacher(
        out, model=name, num_classes=100,
        abstract_variables=_expected(name, 100))
    got = _flax_logits_fn(name, 100)(variables, x.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'resnet8: ' in again.stdout and 'already there; skipped' in (
      again.stdout)


def test_archive_accuracies_are_the_published_table(torch_zoo):
  """The importer's teacher accuracies are configs/cifar100_distill.py's."""
  del torch_zoo
  from adain_kd_jax.torch_import import archive  # pylint: disable=g-import-not-at-top
  from configs import cifar100_distill  # pylint: disable=g-import-not-at-top
  published = {t: numbers['teacher'] / 100 for (t, _), numbers
               in cifar100_distill.PUBLISHED.items()}
  assert {t: published[t] for t in archive.PUBLISHED_TEST_ACCURACY} == (
      pytest.approx(archive.PUBLISHED_TEST_ACCURACY))


def test_archive_that_is_not_one(tmp_path):
  """A file that is not a tar, or a tar without teachers: one clear error."""
  from adain_kd_jax.torch_import import archive  # pylint: disable=g-import-not-at-top
  bad = tmp_path / 'cifar_teachers.tar'
  bad.write_bytes(b'<html>404</html>')
  with pytest.raises(ValueError, match='is not a tar archive'):
    archive.import_archive(str(bad), str(tmp_path / 'out'),
                           import_torch.import_checkpoint)
  import tarfile  # pylint: disable=g-import-not-at-top
  with tarfile.open(bad, 'w') as tar:
    tar.add(__file__, arcname='x/notes.txt')
  with pytest.raises(ValueError, match='holds no <arch>_vanilla'):
    archive.import_archive(str(bad), str(tmp_path / 'out'),
                           import_torch.import_checkpoint)
