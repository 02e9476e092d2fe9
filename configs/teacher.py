r"""Trains a teacher (no distillation) and exports it for distillation configs.

How the committed `teachers/fashion_mnist_resnet20` was made:

  python train.py --config=configs/teacher.py --workdir=runs/teacher_resnet20

then `cp -r runs/teacher_resnet20/export teachers/fashion_mnist_resnet20`.
Override the network or data with `--config.model=... --config.dataset=...`.
"""

from configs import default


def get_config():
  """Returns the teacher-training configuration."""
  config = default.get_config()
  config.model = 'resnet20'
  config.teacher = ''
  config.teacher_checkpoint = ''
  config.method = 'none'
  config.num_epochs = 4.0
  config.learning_rate = 0.1
  config.compare_to = ''
  config.export = True
  return config
