r"""A Fashion-MNIST teacher for the benchmarks (results/fashion_mnist_*).

  python train.py --config=configs/fashion_mnist_teacher.py:resnet20 \
      --workdir=runs/teacher_resnet20 \
      [--config.device_data=True --config.steps_per_call=16]  # accelerator

then copy `runs/teacher_resnet20/export` to `teachers/fashion_mnist_<model>`.
Recipe: 40 epochs of batch 256 on the 55,000 training images that the fixed
validation split leaves (5,000 held out with holdout_seed 0: the students'
validation images, never seen by their teacher), SGD momentum 0.9, lr 0.1
with cosine decay, weight decay 5e-4, random crop (4-pixel padding) and
horizontal flip; validation and test accuracy every epoch. Earlier teachers
(results/fashion_mnist_benchmark/runs/teacher/*_e20: wrn_40_2 94.40%,
resnet56 93.82% test after 20 epochs) trained on all 60,000 images, the
validation split included.
"""

from configs import config_args
from configs import default

# The argument (the bare NAME, or `:model=NAME`).
ARGS = {'model': 'wrn_40_2'}


def get_config(arg=None):
  """Returns the teacher-training config for `model` (default wrn_40_2)."""
  args = config_args.parse_arg(arg, ARGS, config=__file__, positional='model')
  config = default.get_config()
  config.model = args.model
  config.teacher = ''
  config.teacher_checkpoint = ''
  config.method = 'none'
  config.holdout = 5000
  config.holdout_seed = 0
  config.batch_size = 256
  config.num_epochs = 40.0
  config.learning_rate = 0.1
  config.eval_every_epochs = 1.0
  config.checkpoint_every_steps = 1000
  config.compare_to = ''
  config.export = True
  return config
