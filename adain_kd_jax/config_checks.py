"""Config validation: clear errors, naming the field and the fix, before any
data is read or anything is compiled."""

from adain_kd_jax import cli
from adain_kd_jax.data import registry
from adain_kd_jax import distill
from adain_kd_jax import losses
from adain_kd_jax import models


def _fail(field, value, fix):
  raise ValueError(f'config.{field}={value!r} is invalid: {fix}')


def check(config) -> None:
  """Raises ValueError for the first invalid field of `config`.

  The error is marked as the user's (`cli.user_errors`): train.py and the
  sweep print it as one line.
  """
  with cli.user_errors():
    _check(config)


def _check(config) -> None:
  if config.dataset not in registry.DATASETS:
    _fail('dataset', config.dataset,
          f'use one of {", ".join(sorted(registry.DATASETS))}.')
  if config.data_source not in ('idx', 'tfds'):
    _fail('data_source', config.data_source, "use 'idx' or 'tfds'.")
  if (config.data_source == 'idx'
      and registry.DATASETS[config.dataset].idx_subdir is None):
    idx_sets = sorted(n for n, i in registry.DATASETS.items() if i.idx_subdir)
    _fail('data_source', config.data_source,
          f'config.dataset={config.dataset!r} has no IDX files (only '
          f'{", ".join(idx_sets)} do); use --config.data_source=tfds.')
  mock = config.get('mock_data', 0)
  if isinstance(mock, bool) or not isinstance(mock, int) or mock < 0:
    _fail('mock_data', mock, 'use a number of examples (0 = real data).')
  if mock and config.data_source != 'tfds':
    _fail('data_source', config.data_source,
          'config.mock_data replaces tfds data; use --config.data_source=tfds.')
  if mock and config.get('decode_in_workers', False):
    _fail('decode_in_workers', True, 'tfds mock data cannot serve encoded '
          'images; use --config.decode_in_workers=False with mock_data.')
  for field in ('points', 'point_weights'):
    value = config.get(field, ())
    if (not isinstance(value, (tuple, list))
        or not all(isinstance(v, (int, float)) for v in value)):
      example = '(2,)' if field == 'points' else '(1.0,)'
      _fail(field, value,
            f'use a tuple of numbers, e.g. --config.{field}="{example}".')
  distill.check_method(config.method)
  for field in ('model',) + (('teacher',) if config.method != 'none' else ()):
    if getattr(config, field) not in models.MODEL_NAMES:
      _fail(field, getattr(config, field),
            f'use one of {", ".join(models.MODEL_NAMES)}.')
  for field in ('batch_size', 'eval_batch_size', 'log_every_steps',
                'checkpoint_every_steps', 'keep_checkpoints', 'steps_per_call'):
    if int(getattr(config, field)) < 1:
      _fail(field, getattr(config, field), 'it must be a positive integer.')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    _fail('num_epochs', config.num_epochs,
          'set a positive num_epochs or num_train_steps.')
  if config.eval_every_epochs <= 0:
    _fail('eval_every_epochs', config.eval_every_epochs, 'it must be > 0.')
  if config.schedule not in ('cosine', 'piecewise'):
    _fail('schedule', config.schedule, "use 'cosine' or 'piecewise'.")
  if config.learning_rate <= 0:
    _fail('learning_rate', config.learning_rate, 'it must be > 0.')
  if not 0 <= config.momentum < 1:
    _fail('momentum', config.momentum, 'it must be in [0, 1).')
  if config.weight_decay < 0:
    _fail('weight_decay', config.weight_decay, 'it must be >= 0.')
  if config.crop_padding < 0:
    _fail('crop_padding', config.crop_padding, 'it must be >= 0.')
  if config.holdout < 0:
    _fail('holdout', config.holdout, 'it must be >= 0 (0 = no validation).')
  if config.loss.adain_kind not in losses.ADAIN_LOSS_KINDS:
    _fail('loss.adain_kind', config.loss.adain_kind,
          f'use one of {", ".join(map(repr, losses.ADAIN_LOSS_KINDS))}.')
  if config.loss.adain_stats not in losses.ADAIN_STATS:
    _fail('loss.adain_stats', config.loss.adain_stats,
          f'use one of {", ".join(map(repr, losses.ADAIN_STATS))}.')
  if config.loss.temperature <= 0:
    _fail('loss.temperature', config.loss.temperature, 'it must be > 0.')
  if config.method != 'none' and not config.teacher_checkpoint:
    _fail('teacher_checkpoint', config.teacher_checkpoint,
          f'method {config.method!r} needs an exported teacher directory '
          '(train one with configs/teacher.py).')
  if config.compare_to:
    distill.check_method(config.compare_to)
  if config.dtype not in ('float32', 'bfloat16', 'float16'):
    _fail('dtype', config.dtype, "use 'float32', 'bfloat16' or 'float16'.")
