r"""The CPU-sized benchmark: students learn from 5,000 images, teachers from 55,000.

  python train.py --workdir=runs/lowdata/resnet20-resnet8/kd/seed0 \
    --config=configs/fashion_mnist_lowdata.py:teacher=resnet20,student=resnet8,method=kd \
    --config.seed=0

The results in results/fashion_mnist_lowdata use it (its plan.py lists every
run). The regime where distillation matters and a 2-core CPU can afford it:
  * validation: 5,000 training images held out with holdout_seed 0, the same
    for every run seed and held out of the teacher too; every choice (a
    setting, the best epoch) is made on it, never on test;
  * students: a fixed class-balanced subset of the 55,000 images left, 500
    per class (train_per_class, drawn with holdout_seed: the same images for
    every seed and method); seeds vary init, batch order and augmentation;
  * teachers: `teachers/fashion_mnist_<teacher>_55k`, trained on all 55,000
    (configs/fashion_mnist_teacher.py);
  * test: the official 10,000 images.
The recipe is configs/fashion_mnist_distill.py's (batch 128, SGD momentum
0.9, lr 0.05 with cosine decay, weight decay 5e-4, crop and flip, the
published method weights) with the length from the student-alone curve
(NUM_EPOCHS; see the results README) and DKD's warm-up scaled to it.
Evaluation every EVAL_EVERY epochs (val and test: the best-on-validation
epoch and its test top-1 are read from them).
"""

from configs import config_args
from configs import fashion_mnist_distill

# Chosen from the student-alone curve on validation (results README).
NUM_EPOCHS = 40.0
# Evaluations of val (5,000) and test (10,000) cost about a third of a
# resnet8 member's training at every 2 epochs; every 4 keeps 10 of them.
EVAL_EVERY = 4.0
PER_CLASS = 500
# The argument (`:teacher=..,student=..,method=..`, any subset).
ARGS = {'teacher': 'resnet20', 'student': 'resnet8', 'method': 'kd'}


def get_config(arg=None):
  """Returns the config of one cell of the low-data benchmark."""
  args = config_args.parse_arg(arg, ARGS, config=__file__)
  config = fashion_mnist_distill.get_config(
      f'teacher={args.teacher},student={args.student},method={args.method}')
  config.train_per_class = PER_CLASS
  config.teacher_checkpoint = f'teachers/fashion_mnist_{args.teacher}_55k'
  config.num_epochs = NUM_EPOCHS
  config.eval_every_epochs = EVAL_EVERY
  config.log_every_steps = 39  # About once an epoch (5,000 / 128 steps).
  config.dkd.warmup_epochs = 20.0 * NUM_EPOCHS / 240.0
  return config
