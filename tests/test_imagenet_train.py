"""The ImageNet setting end to end on tfds mock data (tiny images)."""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from adain_kd_jax import models
from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import loop
from configs import imagenet_distill


@pytest.fixture(scope='module')
def imagenet_teacher(tmp_path_factory):
  """A random 1000-class resnet18 export for 32x32 inputs."""
  model = models.create_model('resnet18', 1000)
  variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                         train=False)
  directory = str(tmp_path_factory.mktemp('in') / 'export')
  checkpoints.save_teacher(directory, variables, {
      'model': 'resnet18', 'num_classes': 1000, 'dataset': 'imagenet2012',
      'image_shape': [32, 32, 3]}, step=0)
  return directory


# adain_kd: the KD term and the AdaIN term (through the tail of an ImageNet
# ResNet) in one run.
@pytest.mark.parametrize('method', ['adain_kd'])
def test_imagenet_config_trains_on_mock_data(method, tmp_path,
                                             imagenet_teacher):
  """The ImageNet config runs: host-decoded batches, eval over the split."""
  config = imagenet_distill.get_config(
      f'teacher=resnet18,student=resnet18,method={method}')
  config.image_size = 32
  config.num_workers = 1
  config.decode_in_workers = False  # The mock serves decoded images.
  config.teacher_checkpoint = imagenet_teacher
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 2
  config.log_every_steps = 1
  config.test_limit = 12
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=24):
    summary = loop.train_and_evaluate(config, workdir)
  assert summary['steps'] == 2 and np.isfinite(summary['test_accuracy'])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records if r['split'] == 'train'] == [1, 2]
  assert [r['count'] for r in records if r['split'] == 'test'] == [12]
  assert all(np.isfinite(r[term]) for r in records for term in ('kd', 'adain')
             if r['split'] == 'train')


def test_device_data_is_refused_for_streamed_sets(tmp_path,
                                                  imagenet_teacher):
  """config.device_data with ImageNet names the field and the fix."""
  config = imagenet_distill.get_config('teacher=resnet18,student=resnet18')
  config.update(image_size=32, num_workers=1, decode_in_workers=False,
                teacher_checkpoint=imagenet_teacher, batch_size=8,
                eval_batch_size=8, num_train_steps=1, device_data=True)
  with tfds.testing.mock_data(num_examples=24):
    with pytest.raises(ValueError, match='config.device_data=True is '
                       'invalid for imagenet2012: it is for the in-memory'):
      loop.train_and_evaluate(config, str(tmp_path / 'run'))
