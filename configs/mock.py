r"""Any config for a few steps on tfds mock data: a dry run without the data.

  python train.py --workdir=/tmp/mock_c100 \
    --config=configs/mock.py:cifar100_distill,teacher=wrn_40_2,student=wrn_16_2,method=adain
  python train.py --workdir=/tmp/mock_imagenet \
    --config=configs/mock.py:imagenet_distill,method=kd

The argument names a config of configs/ and, after the first comma, that
config's own argument. The result is that config (model, teacher, method,
loss weights, optimiser) with random images and labels from
`tfds.testing.mock_data` (`config.mock_data` per split) instead of the data
set, a randomly initialised teacher unless `teacher_checkpoint` holds one,
small batches and 4 steps, ImageNet at 64x64 pixels. It checks that a config
builds, compiles and trains end to end (loss terms, evaluation, checkpoints,
summary) without the data or the teacher, in a minute or two on a CPU; its
accuracies mean nothing. Any field can still be overridden with
--config.x=y.
"""

import importlib

# What the mock run changes, whatever the config.
MOCK = {
    'mock_data': 64,  # Examples per split.
    'data_source': 'tfds',
    'train_limit': 0,
    'test_limit': 0,
    'holdout': 0,
    'train_per_class': 0,
    'batch_size': 16,
    'eval_batch_size': 32,
    'num_train_steps': 4,
    'eval_every_epochs': 1.0,  # 64 / 16 = 4 steps per epoch.
    'log_every_steps': 2,
    'checkpoint_every_steps': 4,
    'device_data': False,
    'steps_per_call': 1,
    'export': False,
}
# ImageNet (streamed): decoded images from the mock, one worker, small images.
MOCK_STREAMED = {'image_size': 64, 'num_workers': 1,
                 'decode_in_workers': False}


def get_config(arg: str | None = None):
  """`arg`: 'NAME[,ITS_ARGUMENT]' with NAME a module of configs/."""
  name, _, base_arg = (arg or 'cifar100_distill').partition(',')
  try:
    module = importlib.import_module(f'configs.{name}')
  except ModuleNotFoundError:
    raise ValueError(
        f'configs/mock.py:{arg}: there is no configs/{name}.py; use e.g. '
        'configs/mock.py:cifar100_distill,method=kd.') from None
  config = module.get_config(base_arg) if base_arg else module.get_config()
  config.update(MOCK)
  if 'image_size' in config:
    config.update(MOCK_STREAMED)
  config.crd.num_negatives = 32  # Fewer than the mock examples.
  return config
