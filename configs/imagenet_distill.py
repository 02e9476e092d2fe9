r"""ImageNet distillation: ResNet-34 -> ResNet-18, the benchmark recipe.

  python train.py --config=configs/imagenet_distill.py:method=kd \
    --workdir=runs/imagenet/kd/seed0 --config.data_dir=/data/tfds

Recipe (docs/method.md, "The benchmark protocol"): 100 epochs, SGD momentum
0.9, weight decay 1e-4, lr 0.1 per 256 images (batch 256 here), x0.1 at
epochs 30, 60 and 90; random-resized crop 224 and horizontal flip, done on
the host by worker processes (adain_kd_jax/data/imagenet.py; the devices
only normalise); evaluation on the 50,000 validation images (resize 256,
center crop 224).

Data: tfds `imagenet2012`, prepared once from the manually downloaded tars
(`pip install -r requirements-prepare.txt`, then `tfds build imagenet2012
--file_format=array_record`); training reads the array_record files without
TensorFlow. Teacher: torchvision's ResNet-34 imported with
`python -m adain_kd_jax.torch_import.zoo --arch resnet34 --checkpoint
resnet34.pth --out teachers/imagenet/resnet34 --dataset imagenet2012
--test_accuracy 0.7331`.

Loss weights of the baselines are mdistiller's ImageNet configs
(`configs/imagenet/r34_r18/{kd,dkd}.yaml`): kd CE 0.5 + KD 0.5 with
temperature 1; dkd CE 1, alpha 1, beta 0.5, temperature 1, warm-up 1 epoch.
adain_kd weights CE and KD exactly as kd (0.5 and 0.5, temperature 1), so
that its gap to kd is the AdaIN term alone (with `loss.adain_kind='kl'` the
AdaIN term uses that temperature too).

Published top-1 (%), ResNet-34 -> ResNet-18: teacher 73.31, student 69.76
(torchvision's weights); the distilled students, with their conventions:
  - KD 70.66 (the KD figure to compare with) and CRD 71.17: the CRD paper's
    ImageNet table (Tian et al., ICLR 2020; the DKD paper repeats them),
    top-1 at the LAST epoch (RepDistiller issue #16). mdistiller's README
    lists 71.03 for its own run of the KD recipe above.
  - DKD 71.70: the DKD paper's ImageNet table (Zhao et al., CVPR 2022), top-1
    at the BEST test epoch (mdistiller issue #30; on ImageNet close to the
    last).
Report top-1 at the last and at the best epoch.
"""

from configs import config_args
from configs import default

# mdistiller configs/imagenet/r34_r18/kd.yaml: KD.TEMPERATURE 1, CE_WEIGHT
# 0.5, KD_WEIGHT 0.5 (also adain_kd's CE, KD and temperature).
KD_WEIGHTS = {'ce': 0.5, 'kd': 0.5}
KD_TEMPERATURE = 1.0
# mdistiller configs/imagenet/r34_r18/dkd.yaml (ALPHA stays 1, CE_WEIGHT 1).
DKD_BETA = 0.5
DKD_TEMPERATURE = 1.0
DKD_WARMUP_EPOCHS = 1.0
# The argument (`:teacher=..,student=..,method=..`, any subset).
ARGS = {'teacher': 'resnet34', 'student': 'resnet18', 'method': 'adain'}


def get_config(arg=None):
  """Returns the config of one (teacher, student, method); see `ARGS`."""
  args = config_args.parse_arg(arg, ARGS, config=__file__)
  config = default.get_config()
  config.dataset = 'imagenet2012'
  config.data_source = 'tfds'
  config.image_size = 224
  config.num_workers = 0  # Decoding processes (0: one per core).
  # Decode JPEGs in the workers (tfds returns the encoded bytes). False makes
  # tfds decode on reading (needed under tfds.testing.mock_data).
  config.decode_in_workers = True
  config.crop_padding = 0  # Cropping and flipping happen on the host.
  config.flip = False
  config.model = args.student
  config.teacher = args.teacher
  config.method = args.method
  config.teacher_checkpoint = f'teachers/imagenet/{args.teacher}'
  config.points = (-1,)  # S-1 (stage 3 of the 4-stage ImageNet ResNets).
  config.point_weights = (1.0,)
  config.batch_size = 256
  config.eval_batch_size = 500
  config.num_epochs = 100.0
  config.learning_rate = 0.1 * config.batch_size / 256
  config.momentum = 0.9
  config.weight_decay = 1e-4
  config.schedule = 'piecewise'
  config.decay_epochs = (30, 60, 90)
  config.decay_factor = 0.1
  config.eval_every_epochs = 1.0
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.compare_to = ''
  config.crd.class_aware = False  # Labels are not read ahead when streaming.
  if args.method in ('kd', 'adain_kd'):
    # The same CE, KD and temperature for both: their gap is the AdaIN term.
    config.loss.ce, config.loss.kd = KD_WEIGHTS['ce'], KD_WEIGHTS['kd']
    config.loss.temperature = KD_TEMPERATURE
  if args.method == 'dkd':
    config.loss.temperature = DKD_TEMPERATURE
    config.dkd.beta = DKD_BETA
    config.dkd.warmup_epochs = DKD_WARMUP_EPOCHS
  return config
