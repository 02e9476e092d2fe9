r"""The embedded default: AdaIN-KD resnet20 -> resnet8 on Fashion-MNIST.

Distils a resnet8 student from the committed resnet20 teacher
(`teachers/fashion_mnist_resnet20`, see its `teacher.json` for how it was
trained and its test accuracy), then trains the same student without
distillation (`compare_to`) and prints both test accuracies:

  python train.py --config=configs/default.py --workdir=runs/default

The schedule is sized for a 2-core CPU (about 5 minutes for both runs): one
short epoch, not a converged model. Fashion-MNIST is read from the IDX files of
the Debian package `dataset-fashion-mnist`
(`python -m adain_kd_jax.data.fetch`).
"""

import ml_collections


def get_config():
  """Returns the default configuration."""
  config = ml_collections.ConfigDict()

  # --- Data ---
  # A registered set (fashion_mnist | mnist | cifar10 | cifar100 |
  # imagenet2012), or your own by where it is: folder:DIR (DIR/train/<class>/
  # and DIR/test/<class>/ image folders), npz:FILE.npz (x_train, y_train,
  # x_test, y_test) or tfds:NAME (any tfds set prepared in data_dir); see
  # docs/data.md.
  config.dataset = 'fashion_mnist'
  # A registered set's source, one its registry row declares: 'idx' (IDX
  # files) or 'tfds' (tfds.data_source). A set named by path is read by its
  # kind, and this field is not read.
  config.data_source = 'idx'
  # A set named by path only: images of other sizes brought to one,
  # 'resize:HxW' (bilinear) or 'crop:HxW' (centre); '' = they must share one.
  config.image_fit = ''
  # '' searches the usual places (see adain_kd_jax/data/sources.py).
  config.data_dir = ''
  config.download = False  # tfds only: without network a download hangs.
  # tfds only: N random examples per split from tfds.testing.mock_data
  # instead of the real data, and a random teacher when teacher_checkpoint
  # does not exist (a dry run of a config; see configs/mock.py). 0 = off.
  config.mock_data = 0
  config.train_limit = 0  # Use only the first N training examples (0 = all).
  config.test_limit = 0  # Evaluate on the first N test examples (0 = all).
  # Examples held out of the training set for tuning (0 = none). When set,
  # evaluation also reports `val` accuracy, and weights are chosen on it.
  config.holdout = 0
  # Seed of that split (int >= 0): fixed, so every run seed validates on the
  # same images and a teacher trained with the same holdout never saw them.
  # -1 = the run's own config.seed (how runs before 2026-12 chose it).
  config.holdout_seed = 0
  # Train on a fixed class-balanced subset: N examples of every class, drawn
  # (with holdout_seed) from the training images the holdout left (0 = all).
  config.train_per_class = 0
  config.crop_padding = 4  # Random crop of the original size after padding.
  config.flip = True  # Random horizontal flip.
  # Streamed sets (ImageNet) only; the in-memory sets ignore these three.
  config.image_size = 224  # Side of the crops the host input makes.
  config.num_workers = 0  # Input worker processes (0: one per core).
  # Decode the JPEGs in the input workers (tfds hands over the encoded
  # bytes; configs/imagenet_distill.py sets it). False: tfds decodes them on
  # reading, in the training process (tfds mock data needs False).
  config.decode_in_workers = False

  _models(config)
  _method(config)
  _loss(config)
  _baselines(config)
  _optimisation(config)
  _run(config)
  return config


def _models(config):
  """The student, the teacher and how they compute."""
  # --- Models ---
  # The network being trained (the student; with method 'none', the network
  # trained alone or as a teacher): a name of adain_kd_jax.models.MODEL_NAMES.
  config.model = 'resnet8'
  # The teacher's architecture, a name of models.MODEL_NAMES; it must be what
  # teacher_checkpoint holds. Unused (may be '') with method 'none'.
  config.teacher = 'resnet20'
  # An exported teacher directory (written by a run with method='none' and
  # export=True). Relative paths are resolved against the repository root.
  # Needed by every method but 'none'.
  config.teacher_checkpoint = 'teachers/fashion_mnist_resnet20'
  # Computation dtype: 'float32', 'bfloat16' (on accelerators) or 'float16';
  # parameters stay float32.
  config.dtype = 'float32'
  # Keep the training set on the devices and gather each batch there (small
  # data sets on accelerators: no host transfer per step). True or False;
  # not for streamed data sets (imagenet2012).
  config.device_data = False
  # Training steps per jitted call (lax.scan), >= 1; > 1 amortises per-call
  # dispatch for small batches on accelerators (keep 1 on CPU: XLA:CPU runs
  # a loop body's convolutions far slower). Calls end at every
  # log/checkpoint/eval step.
  config.steps_per_call = 1


def _method(config):
  """The distillation method and where its feature terms are taken."""
  # --- Method ---
  # A key of adain_kd_jax.methods.METHODS (each adds up its loss terms; the
  # table in docs/method.md lists them with the settings their terms read).
  config.method = 'adain'
  # Feature points (a tuple of stage numbers, 1..S for a model of S stages, or
  # counted from the last stage: 0 = S, -1 = S-1) for adain, stat_l2 and
  # fitnet, each with its own connector (fitnet: hint regressor) and weight.
  # (3,) and loss.adain 0.3 were chosen on a validation split: the table is
  # in results/fashion_mnist/README.md. At S a ResNet tail is pooling +
  # classifier, so the teacher judges only the mean (docs/method.md, "The
  # AdaIN loss"); S-1 = 2 lets it judge the variance.
  config.points = (3,)
  # One weight (a number) per entry of config.points: the same length.
  config.point_weights = (1.0,)
  # End each connector (1x1 conv + BN) with a ReLU, as the authors' released
  # code does (True or False).
  config.connector_relu = False


def _loss(config):
  """The weights of the loss terms (methods.TERMS) and their settings."""
  # Loss weights (floats) by term; a method adds up only its own terms
  # (methods.METHODS) and a weight of 0 drops a term.
  config.loss = ml_collections.ConfigDict()
  config.loss.ce = 1.0  # Cross-entropy with the labels (every method).
  config.loss.kd = 1.0  # gamma: Hinton KD, tau^2 KL (kd, adain_kd).
  # tau (> 0): the temperature of kd and dkd.
  config.loss.temperature = 4.0
  # beta: L_adain is a squared error on logits (about 10 at the start, where
  # CE is about 2.3); chosen with config.points.
  config.loss.adain = 0.3
  # How the tail's output on the AdaIN map is judged (losses.ADAIN_LOSS_KINDS):
  # 'mse' on logits, 'kl' (temperature KL to the teacher's output) or 'ce'
  # (against the labels).
  config.loss.adain_kind = 'mse'
  # Student statistics put into the teacher's map (losses.ADAIN_STATS):
  # 'both', 'mean' (with the teacher's own std) or 'std' (with the teacher's
  # own mean).
  config.loss.adain_stats = 'both'
  # tau (> 0) of loss.adain_kind='kl': AdaIN's own, apart from KD's.
  config.loss.adain_temperature = 4.0
  # Linear warm-up of the AdaIN term over N epochs (>= 0; 0 = none).
  config.loss.adain_warmup_epochs = 0.0
  # Mean-only statistics L2 at config.points, through the connectors,
  # added to adain / adain_kd (the authors' released form); 0 = off.
  config.loss.stat_mean = 0.0
  config.loss.fm = 0.0  # alpha: FitNet term added to adain / adain_kd.
  config.loss.fitnet = 100.0  # FitNet method weight (as in the CRD benchmark).
  config.loss.stat_l2 = 1.0  # Statistics-L2 ablation weight (stat_l2).
  # Squared error between student and teacher logits (method logit_mse; Ba &
  # Caruana, 2014).
  config.loss.logit_mse = 1.0
  # Baselines, weights as published with the CRD / DKD benchmarks.
  config.loss.at = 1000.0  # Attention transfer, summed over all stages.
  config.loss.crd = 0.8  # Contrastive representation distillation.
  config.loss.dkd = 1.0  # Scales alpha * TCKD + beta * NCKD (with warm-up).
  # Variational information distillation, summed over every stage (weight 1
  # each; RepDistiller's -b 1 with CE 1 and no KD).
  config.loss.vid = 1.0
  # Relational baselines, RepDistiller's -b with CE 1 and no KD (-a 0):
  # similarity-preserving at the last stage output.
  config.loss.sp = 3000.0
  # Correlation congruence on the pooled features through linear heads.
  config.loss.cc = 0.02
  # Relational KD (distance + angle, weighted by config.rkd) on the pooled
  # features.
  config.loss.rkd = 1.0
  # Probabilistic knowledge transfer on the pooled features.
  config.loss.pkt = 30000.0
  # Neuron selectivity transfer, summed over every stage (weight 1 each).
  config.loss.nst = 50.0
  # KDSVD, relations of consecutive stages' singular vectors: mdistiller's
  # CFG.KDSVD.LOSS.FEAT_WEIGHT 1 with CE 1 (RepDistiller's scripts publish
  # no -b for it).
  config.loss.kdsvd = 1.0
  # DIST (config.dist), its authors' CIFAR-100 kd_loss_weight with CE 1.
  config.loss.dist = 2.0
  # OFD's partial L2 on the pre-ReLU maps through connectors (mdistiller's
  # CFG.OFD.LOSS.FEAT_WEIGHT with CE 1).
  config.loss.ofd = 1e-3
  # ReviewKD's hierarchical context loss on the fused features (config.reviewkd;
  # mdistiller's CFG.REVIEWKD.REVIEWKD_WEIGHT with CE 1; 5 for resnet32x4 ->
  # resnet8x4 in cifar100_distill.py).
  config.loss.reviewkd = 1.0
  # SRRL's feature matching + softmax regression through the teacher's
  # classifier (method srrl, with CE 1 and KD 1 at loss.temperature):
  # DefangChen/SimKD's CIFAR-100 recipe (scripts/run_distill.sh:
  # -c 1 -d 1 -b 1).
  config.loss.srrl = 1.0
  # FSP and AB distil in a first phase (config.init_epochs) on their own
  # loss; RepDistiller's main phase then adds nothing of them (loss_kd = 0
  # in helper/loops.py, whatever its -b) and no KD (-a 0): weight 0, the
  # term reported, not optimised.
  config.loss.fsp = 0.0  # RepDistiller's script: -a 0 -b 50.
  config.loss.ab = 0.0  # RepDistiller's script: -a 0 -b 1.
  # FT's factor loss through the translator and the paraphraser (method ft,
  # CE 1, no KD): RepDistiller's beta (scripts/run_cifar_distill.sh:
  # --distill factor -a 0 -b 200).
  config.loss.ft = 200.0
  # SimKD's MSE between the projected student map and the teacher's last
  # map (method simkd, alone: no CE, no KD): DefangChen/SimKD's CIFAR-100
  # recipe (scripts/run_distill.sh: --distill simkd -c 0 -d 0 -b 1).
  config.loss.simkd = 1.0


def _baselines(config):
  """Each method's own settings group, named by its terms' `config_fields`
  (methods.SETTING_FIELDS): a grid's members may differ in them."""
  # DKD (method dkd): loss.dkd * min(epoch / warmup_epochs, 1) *
  # (alpha * TCKD + beta * NCKD), at loss.temperature.
  config.dkd = ml_collections.ConfigDict()
  config.dkd.alpha = 1.0  # Target-class KD weight (float >= 0).
  # Non-target-class KD weight (float >= 0); per pair in cifar100_distill.py.
  config.dkd.beta = 8.0
  config.dkd.warmup_epochs = 20.0  # Linear warm-up length in epochs (> 0).
  # CRD (method crd): embeddings contrasted with a memory bank of negatives.
  config.crd = ml_collections.ConfigDict()
  config.crd.dim = 128  # Embedding size (>= 1).
  config.crd.temperature = 0.07  # Of the contrast (> 0).
  # Negatives per example (>= 1; fewer than the training examples).
  config.crd.num_negatives = 16384
  config.crd.momentum = 0.5  # Memory-bank update, in [0, 1].
  # Negatives from other classes ('exact'; True or False). Needs every label
  # up front: False for streamed data sets (imagenet2012).
  config.crd.class_aware = True
  # VID (method vid): per stage, a regressor predicts the teacher's map as
  # a Gaussian mean with a learnt per-channel variance softplus(alpha) + eps.
  config.vid = ml_collections.ConfigDict()
  # The variance every channel starts at (> eps), as published.
  config.vid.init_pred_var = 5.0
  config.vid.eps = 1e-5  # The variance's floor (> 0), as published.
  # CC (method cc): linear heads on both networks' pooled features.
  config.cc = ml_collections.ConfigDict()
  # The size (>= 1) of their embeddings (RepDistiller's feat_dim).
  config.cc.dim = 128
  # RKD (method rkd): its distance and angle parts inside loss.rkd.
  config.rkd = ml_collections.ConfigDict()
  config.rkd.distance_weight = 25.0  # >= 0; RepDistiller's w_d.
  config.rkd.angle_weight = 50.0  # >= 0; RepDistiller's w_a.
  # DIST (method dist): tau^2 (beta inter + gamma intra) on softmax(z / tau).
  config.dist = ml_collections.ConfigDict()
  config.dist.beta = 1.0  # Inter-class relation weight (>= 0).
  config.dist.gamma = 1.0  # Intra-class relation weight (>= 0).
  # tau (> 0): 4 on CIFAR-100 (the authors' dist_cifar.yaml: kd dist_t4).
  config.dist.temperature = 4.0
  # ReviewKD (method reviewkd): loss.reviewkd * min(epoch / warmup_epochs, 1).
  config.reviewkd = ml_collections.ConfigDict()
  config.reviewkd.warmup_epochs = 20.0  # > 0; mdistiller's WARMUP_EPOCHS.
  # SimKD (method simkd): its projector's middle width is the teacher's
  # width // factor (int >= 1; DefangChen/SimKD's --factor, 2 in its
  # CIFAR-100 recipe and README table).
  config.simkd = ml_collections.ConfigDict()
  config.simkd.factor = 2  # The projector's reduction (int >= 1).


def _optimisation(config):
  """SGD with momentum and weight decay, the schedule, the training length."""
  # --- Optimisation ---
  # Global batch (>= 1), split over all devices: a multiple of their number.
  config.batch_size = 128
  config.num_epochs = 1.0  # Training length (> 0); may be fractional.
  config.num_train_steps = -1  # If > 0, overrides num_epochs.
  config.learning_rate = 0.05  # Peak learning rate (> 0).
  config.momentum = 0.9  # SGD momentum, in [0, 1).
  # On all parameters (>= 0), as torch.optim.SGD does.
  config.weight_decay = 5e-4
  config.schedule = 'cosine'  # 'cosine' or 'piecewise' (steps.py).
  config.warmup_epochs = 0.0  # Linear warm-up from 0 (epochs, >= 0).
  # piecewise: epochs (numbers) at which to multiply by decay_factor.
  config.decay_epochs = (150, 180, 210)
  config.decay_factor = 0.1  # piecewise: the factor (float > 0).
  # The first phase of the methods that have one (fsp, ab): epochs (>= 0,
  # may be fractional) counted in num_epochs, before the distillation,
  # whose schedule starts after it (training/init_phase.py). RepDistiller's
  # init_epochs: 30 (its 240 epochs of distillation follow; here set
  # num_epochs to 270 for the same).
  config.init_epochs = 30.0
  # The first phase's constant learning rate (> 0), or 0: config.learning_rate
  # (RepDistiller's `init()`: 0.01 for FT with a resnet or wrn student,
  # configs/cifar100_distill.py; the run's rate otherwise).
  config.init_learning_rate = 0.0


def _run(config):
  """Seed, logging, evaluation, checkpoints and what the run leaves."""
  # --- Run ---
  config.seed = 0  # Initialisation, data order and augmentation (int).
  config.log_every_steps = 50  # Training metrics every N steps (>= 1).
  # Evaluation every N epochs (> 0, may be fractional); also at the end.
  config.eval_every_epochs = 1.0
  # Evaluation batch (>= 1), split over all devices: a multiple of their
  # number.
  config.eval_batch_size = 500
  # Checkpoint every N steps (>= 1); also at every evaluation and the end.
  config.checkpoint_every_steps = 200
  # Checkpoints kept (>= 1; 2 or more, so that a corrupted newest one has a
  # predecessor to fall back to).
  config.keep_checkpoints = 2
  # A non-finite loss or gradient stops the run with an error naming the step
  # and the term; True skips such steps instead (counted in summary.json).
  config.skip_nonfinite = False
  # After the run, train the same network with this method (a key of
  # methods.METHODS) in WORKDIR/compare_<method> and print both accuracies
  # ('' = off).
  config.compare_to = 'none'
  # Write WORKDIR/export (params + batch stats + teacher.json) at the end, for
  # use as a teacher (True or False).
  config.export = False
  # How `sweep --grid` / `campaign --grid` lay out a table's members in one
  # step: 'loop' (each member's step in turn, one program) or 'vmap' (a full
  # methods x seeds table with its seeds stacked under jax.vmap). On XLA:CPU
  # the loop is the faster (benchmarks/README.md); solo runs ignore it.
  config.grid_layout = 'loop'
