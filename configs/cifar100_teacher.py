r"""Trains a CIFAR-100 teacher with the benchmark recipe and exports it.

  python train.py --config=configs/cifar100_teacher.py:model=wrn_40_2 \
    --workdir=runs/c100_teacher/wrn_40_2
  cp -r runs/c100_teacher/wrn_40_2/export teachers/cifar100/wrn_40_2

Same recipe as configs/cifar100_distill.py (240 epochs, batch 64, ...).
Published teacher top-1 (%): wrn_40_2 75.61, resnet56 72.34, resnet110
74.31, resnet32x4 79.42, vgg13 74.64, ResNet50 79.34. Or skip training:
import the benchmark's PyTorch checkpoints with adain_kd_jax.torch_import.zoo.
"""

from configs import cifar100_distill
from configs import config_args
from configs import default

# The argument (`:model=NAME`, or the bare NAME).
ARGS = {'model': 'wrn_40_2'}


def get_config(arg=None):
  """Returns the teacher-training config for `model` (default wrn_40_2)."""
  args = config_args.parse_arg(arg, ARGS, config=__file__, positional='model')
  config = cifar100_distill.cifar100_recipe(default.get_config(), args.model)
  config.model = args.model
  config.teacher = ''
  config.teacher_checkpoint = ''
  config.method = 'none'
  config.export = True
  return config
