r"""configs/default.py at toy size: checks an install in well under a minute.

  python train.py --config=configs/smoke.py --workdir=/tmp/adain_smoke

Same teacher, student and method as the default, on 512 training and 500 test
examples, 12 steps of batch 32. Tests use it with mock data.
"""

from configs import default


def get_config():
  """Returns the smoke-test configuration."""
  config = default.get_config()
  config.train_limit = 512
  config.test_limit = 500
  config.batch_size = 32
  config.num_train_steps = 12
  config.eval_every_epochs = 1.0
  config.eval_batch_size = 256
  config.log_every_steps = 4
  config.checkpoint_every_steps = 8
  config.crd.num_negatives = 256  # Fewer than the 512 examples.
  config.init_epochs = 0.25  # FSP's, AB's first phase: 4 of the 12 steps.
  return config
