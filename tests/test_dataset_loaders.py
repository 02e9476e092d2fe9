"""A data set names its loader: the registry rows' sources and input modules."""

import json
import os

import numpy as np
import pytest

from adain_kd_jax import cli
from adain_kd_jax.data import loader
from adain_kd_jax.data import registry
from adain_kd_jax.data import sources
from adain_kd_jax.training import config_checks
from adain_kd_jax.training import loop
from configs import smoke
from tests import toy_stream

_TOY = 'toy_stream'


def test_every_row_declares_the_sources_that_exist():
  """Each row names known sources, and 'idx' only with its IDX folder."""
  for name, info in registry.DATASETS.items():
    assert info.sources and set(info.sources) <= set(sources.SOURCES), name
    assert ('idx' in info.sources) == (info.idx_subdir is not None), name
    assert info.streamed == (info.input_module is not None), name
  assert registry.idx_names() == ['fashion_mnist', 'mnist']
  assert registry.DATASETS['imagenet2012'].streamed


def test_a_row_without_sources_or_with_idx_but_no_folder_is_refused():
  """DatasetInfo itself refuses an empty source list and 'idx' without files."""
  with pytest.raises(ValueError, match='sources is empty'):
    registry.DatasetInfo('x', 2, (4, 4, 1), (0.5,), (0.5,), sources=())
  with pytest.raises(ValueError, match="source 'idx' needs idx_subdir"):
    registry.DatasetInfo('x', 2, (4, 4, 1), (0.5,), (0.5,), sources=('idx',))


@pytest.fixture(name='tfds_only_mnist')
def _tfds_only_mnist(monkeypatch):
  """mnist's row declaring tfds alone (as a set with one source does)."""
  row = registry.DATASETS['mnist']
  monkeypatch.setitem(registry.DATASETS, 'mnist', registry.DatasetInfo(
      row.name, row.num_classes, row.image_shape, row.mean, row.std,
      idx_subdir=row.idx_subdir, sources=('tfds',)))


def test_a_source_the_row_does_not_declare_is_refused(tfds_only_mnist):
  """config.data_source outside the row's sources: one line, the valid ones."""
  del tfds_only_mnist
  config = smoke.get_config()
  config.update(dataset='mnist', data_source='idx')
  with pytest.raises(ValueError) as info:
    config_checks.check(config)
  message = str(info.value)
  assert message == (
      "config.data_source='idx' is invalid: config.dataset='mnist' has no "
      "IDX files (only fashion_mnist do); its registry row declares 'tfds': "
      'use --config.data_source=tfds.')
  assert cli.is_user_error(info.value)
  config.data_source = 'tfds'
  config_checks.check(config)  # The declared one passes.


def test_an_input_module_without_the_api_is_named():
  """A row naming a module that lacks open_source etc. says what is missing."""
  info = registry.DatasetInfo('bad', 2, (8, 8, 3), (0.5,) * 3, (0.5,) * 3,
                              input_module='tests.conftest')
  with pytest.raises(ValueError, match=r"'tests.conftest' lacks open_source, "
                     r'train_batches, eval_batches'):
    loader.open_input_module(info)


@pytest.fixture(name='toy_streamed_set')
def _toy_streamed_set(tmp_path, monkeypatch):
  """A second streamed set: tests/toy_stream.py and one row, on files here."""
  rng = np.random.default_rng(0)
  for split, n in (('train', 32), ('test', 12)):
    labels = rng.integers(0, 4, n)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    toy_stream.write(str(tmp_path), split, images, labels)
  monkeypatch.setattr(toy_stream, 'DIRECTORY', str(tmp_path))
  monkeypatch.setitem(registry.DATASETS, _TOY, registry.DatasetInfo(
      _TOY, num_classes=4, image_shape=(8, 8, 3), mean=(0.5,) * 3,
      std=(0.25,) * 3, input_module='tests.toy_stream'))
  return tmp_path


def test_a_second_streamed_set_is_its_module_and_one_row(toy_streamed_set,
                                                         tmp_path):
  """The toy streamed set trains and evaluates through its own module."""
  del toy_streamed_set
  config = smoke.get_config()
  config.update(dataset=_TOY, data_source='tfds', method='none',
                compare_to='', image_size=8, train_limit=0, test_limit=0,
                batch_size=8, eval_batch_size=8, num_train_steps=3,
                log_every_steps=1, checkpoint_every_steps=3)
  workdir = str(tmp_path / 'run')
  summary = loop.train_and_evaluate(config, workdir)
  assert summary['steps'] == 3 and summary['dataset'] == _TOY
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['count'] for r in records if r['split'] == 'test'] == [12]
  assert [r['step'] for r in records if r['split'] == 'train'] == [1, 2, 3]
  data = loader.open_data(config, 0, 1)
  assert data.streaming and data.num_train == 32
  assert data.image_shape == (8, 8, 3)
  data.close()
