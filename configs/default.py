r"""The embedded default: AdaIN-KD resnet20 -> resnet8 on Fashion-MNIST.

Distils a resnet8 student from the committed resnet20 teacher
(`teachers/fashion_mnist_resnet20`, see its `teacher.json` for how it was
trained and its test accuracy), then trains the same student without
distillation (`compare_to`) and prints both test accuracies:

  python train.py --config=configs/default.py --workdir=runs/default

The schedule is sized for a 2-core CPU (about 5 minutes for both runs): one
short epoch, not a converged model. Fashion-MNIST is read from the IDX files of
the Debian package `dataset-fashion-mnist` (`python -m adain_kd_jax.fetch_data`).
"""

import ml_collections


def get_config():
  """Returns the default configuration."""
  config = ml_collections.ConfigDict()

  # --- Data ---
  config.dataset = 'fashion_mnist'  # fashion_mnist | mnist | cifar10 | cifar100
  config.data_source = 'idx'  # 'idx' (IDX files) or 'tfds' (tfds.data_source).
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
  config.crop_padding = 4  # Random crop of the original size after padding.
  config.flip = True  # Random horizontal flip.
  # Streamed sets (ImageNet) only; the in-memory sets ignore these three.
  config.image_size = 224  # Side of the crops the host input makes.
  config.num_workers = 0  # Input worker processes (0: one per core).
  # Decode the JPEGs in the input workers (tfds hands over the encoded
  # bytes; configs/imagenet_distill.py sets it). False: tfds decodes them on
  # reading, in the training process (tfds mock data needs False).
  config.decode_in_workers = False

  # --- Models ---
  config.model = 'resnet8'  # The network being trained (student or teacher).
  config.teacher = 'resnet20'
  # An exported teacher directory (written by a run with method='none').
  # Relative paths are resolved against the repository root.
  config.teacher_checkpoint = 'teachers/fashion_mnist_resnet20'
  config.dtype = 'float32'  # Computation dtype (bfloat16 on accelerators).
  # Keep the training set on the devices and gather each batch there (small
  # data sets on accelerators: no host transfer per step).
  config.device_data = False
  # Training steps per jitted call (lax.scan); > 1 amortises per-call
  # dispatch for small batches on accelerators (keep 1 on CPU: XLA:CPU runs
  # a loop body's convolutions far slower). Calls end at every
  # log/checkpoint/eval step.
  config.steps_per_call = 1

  # --- Method ---
  # none | kd | fitnet | at | stat_l2 | adain | adain_kd | crd | dkd
  # (see distill.py).
  config.method = 'adain'
  # Feature points (stage numbers, 1..S) for adain, stat_l2 and fitnet, each
  # with its own connector and weight. Tuned on a validation split (5,000
  # training images held out, resnet20 -> resnet8, seed 0, 1 epoch; see
  # results/fashion_mnist/README.md): stage 3 = S with loss.adain 0.3 reached
  # 82.32% val top-1, the other five of {0.03, 0.1, 0.3} x {2, 3} 79.96 to
  # 80.64. At S a ResNet tail is pooling + classifier, so the teacher judges
  # only the mean (docs/method.md, "The AdaIN loss"); S-1 = 2 lets it judge
  # the variance.
  config.points = (3,)
  config.point_weights = (1.0,)
  config.loss = ml_collections.ConfigDict()
  config.loss.ce = 1.0
  config.loss.kd = 1.0  # gamma: Hinton KD, tau^2 KL.
  config.loss.temperature = 4.0
  # beta: L_adain is a squared error on logits (about 10 at the start, where
  # CE is about 2.3); weights near 1 slowed learning in a trial. 0.3 was
  # chosen on the validation split (see config.points).
  config.loss.adain = 0.3
  # How the tail's output on the AdaIN map is judged: 'mse' on logits, 'kl'
  # (temperature KL to the teacher's output) or 'ce' (against the labels).
  config.loss.adain_kind = 'mse'
  # Student statistics put into the teacher's map: 'both', 'mean' (with the
  # teacher's own std) or 'std' (with the teacher's own mean).
  config.loss.adain_stats = 'both'
  config.loss.fm = 0.0  # alpha: FitNet term added to adain / adain_kd.
  config.loss.fitnet = 100.0  # FitNet method weight (as in the CRD benchmark).
  config.loss.stat_l2 = 1.0  # Statistics-L2 ablation weight.
  # Baselines, weights as published with the CRD / DKD benchmarks.
  config.loss.at = 1000.0  # Attention transfer, summed over all stages.
  config.loss.crd = 0.8
  config.loss.dkd = 1.0  # Scales alpha * TCKD + beta * NCKD (with warm-up).
  config.dkd = ml_collections.ConfigDict()
  config.dkd.alpha = 1.0
  config.dkd.beta = 8.0
  config.dkd.warmup_epochs = 20.0
  config.crd = ml_collections.ConfigDict()
  config.crd.dim = 128  # Embedding size.
  config.crd.temperature = 0.07
  config.crd.num_negatives = 16384
  config.crd.momentum = 0.5  # Memory-bank update.
  config.crd.class_aware = True  # Negatives from other classes ('exact').

  # --- Optimisation ---
  config.batch_size = 128  # Global batch, split over all devices.
  config.num_epochs = 1.0  # May be fractional.
  config.num_train_steps = -1  # If > 0, overrides num_epochs.
  config.learning_rate = 0.05  # Peak learning rate.
  config.momentum = 0.9
  config.weight_decay = 5e-4  # On all parameters, as torch.optim.SGD does.
  config.schedule = 'cosine'  # 'cosine' or 'piecewise'.
  config.warmup_epochs = 0.0
  config.decay_epochs = (150, 180, 210)  # piecewise: multiply by decay_factor.
  config.decay_factor = 0.1

  # --- Run ---
  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0  # Also evaluates at the end of training.
  config.eval_batch_size = 500
  config.checkpoint_every_steps = 200  # Also at every evaluation and the end.
  config.keep_checkpoints = 2  # >= 2, so that a corrupted newest one has a
  # predecessor to fall back to.
  # A non-finite loss or gradient stops the run with an error naming the step
  # and the term; True skips such steps instead (counted in summary.json).
  config.skip_nonfinite = False
  # After the run, train the same network with this method in
  # WORKDIR/compare_<method> and print both accuracies ('' = off).
  config.compare_to = 'none'
  # Write WORKDIR/export (params + batch stats + teacher.json) at the end, for
  # use as a teacher.
  config.export = False
  return config
