"""Config validation: one pass over everything the config alone can tell.

`check(config)` runs before any data is read, any model is built or anything
is compiled (the run's set-up, the sweep and the campaign call it first). Each error
is one line naming the field and the fix: `config.x=... is invalid: ...`.
Allowed values come from the modules that own them (data.registry.DATASETS
and the sources each row declares, data.own_data for sets named by path,
methods.METHODS, models.MODEL_NAMES and DTYPES, losses.ADAIN_LOSS_KINDS and
ADAIN_STATS, steps.SCHEDULES);
configs/default.py documents every field.

What needs more than the config is checked where it is known, still before
anything is compiled or written:
  * run.create_run: batch sizes divisible by the device count; batch_size
    no larger than the training set.
  * data.loader / data.sources / preflight: holdout smaller than the training
    set; every class has train_per_class examples; the data files exist;
    images and labels fit the data set.
  * objective.create: teacher and student stage counts agree (feature methods,
    AT), and their channel counts at every stage (KDSVD); each of
    config.points is a stage of the model; FitNet's hint regressors map
    the student's maps to the teacher's shapes; SimKD's teacher classifies
    the mean of its last stage map (the classifier it reuses), OFD's pair
    exposes pre-ReLU maps.
  * Distiller.init_term_state: crd.num_negatives below the training set size.
  * checkpoints.load_teacher: teacher_checkpoint holds a config.teacher
    trained on config.dataset.
  * preflight.prepare_workdir: the workdir is writable, with room for the
    checkpoints.
"""

import math

from adain_kd_jax import cli
from adain_kd_jax import losses
from adain_kd_jax import methods
from adain_kd_jax import models
from adain_kd_jax.data import own_data
from adain_kd_jax.data import registry
from adain_kd_jax.data import sources
from adain_kd_jax.training import steps

# Fields that are counts of at least one.
_POSITIVE_INTS = ('batch_size', 'eval_batch_size', 'log_every_steps',
                  'checkpoint_every_steps', 'keep_checkpoints',
                  'steps_per_call')


GRID_LAYOUTS = ('loop', 'vmap')  # config.grid_layout.


def _fail(field, value, fix):
  raise ValueError(f'config.{field}={value!r} is invalid: {fix}')


def _one_of(field, value, allowed, quote=False):
  if value not in allowed:
    names = (repr(a) if quote else a for a in allowed)
    _fail(field, value, f'use one of {", ".join(names)}.'
          + cli.did_you_mean(value, allowed))


def _uses(config, term: str) -> bool:
  """Whether `config.method` adds up loss `term` (a non-zero weight)."""
  return (term in methods.METHODS[config.method]
          and (term == 'ce' or config.loss[term] != 0))


def check(config) -> None:
  """Raises ValueError for the first invalid field of `config`.

  The error is marked as the user's (`cli.user_errors`): train.py and the
  sweep print it as one line.
  """
  with cli.user_errors():
    for part in (_check_data, _check_method, _check_models, _check_points,
                 _check_loss, _check_baselines, _check_optimisation,
                 _check_run):
      part(config)


def _check_data(config) -> None:
  """dataset, data_source, mock_data, limits, holdout, streaming fields."""
  own = _check_dataset(config)
  source = own[0] if own else config.data_source
  if not own:
    _one_of('data_source', config.data_source, sources.SOURCES, quote=True)
  served_by = _info_sources(config, own)
  if source not in served_by:
    why = ('has no IDX files (only '
           f'{", ".join(registry.idx_names())} do)'
           if config.data_source == 'idx' else 'is not served by it')
    _fail('data_source', config.data_source,
          f'config.dataset={config.dataset!r} {why}; its registry row '
          f'declares {", ".join(map(repr, served_by))}: use '
          f'--config.data_source={served_by[0]}.')
  mock = config.get('mock_data', 0)
  if isinstance(mock, bool) or not isinstance(mock, int) or mock < 0:
    _fail('mock_data', mock, 'use a number of examples (0 = real data).')
  if mock and source != 'tfds':
    _fail('data_source', config.data_source,
          'config.mock_data replaces tfds data; use --config.data_source=tfds.')
  if mock and config.get('decode_in_workers', False):
    _fail('decode_in_workers', True, 'tfds mock data cannot serve encoded '
          'images; use --config.decode_in_workers=False with mock_data.')
  for field in ('train_limit', 'test_limit', 'holdout', 'crop_padding',
                'train_per_class'):
    if config[field] < 0:
      _fail(field, config[field], 'it must be >= 0 (0 = off).')
  seed = config.holdout_seed
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < -1:
    _fail('holdout_seed', seed,
          "use an int >= 0 (or -1 for the run's own config.seed).")
  if config.get('num_workers', 0) < 0:
    _fail('num_workers', config.num_workers,
          'it must be >= 0 (0 = one per core).')
  if _streamed(config):
    for field in ('holdout', 'train_per_class', 'device_data'):
      if config[field]:
        raise ValueError(
            f'config.{field}={config[field]!r} is invalid for '
            f'{config.dataset}: it is for the in-memory data sets; set it '
            'to 0/False.')


def _check_dataset(config):
  """dataset: a key of DATASETS, or KIND:LOCATION (own_data.parse's
  result); image_fit."""
  why = own_data.check_name(config.dataset)
  if why:
    _fail('dataset', config.dataset, why)
  own = own_data.parse(config.dataset)
  if not own:
    _one_of('dataset', config.dataset, sorted(registry.DATASETS))
  fit = config.get('image_fit', '')
  own_data.parse_fit(fit)
  if fit and not own:
    _fail('image_fit', fit, f'config.dataset={config.dataset!r} has images '
          "of one size; set it to '' (it is for sets named by path).")
  return own


def _info_sources(config, own) -> tuple[str, ...]:
  """The sources the data set's row declares (a set named by path: its
  kind)."""
  return (own[0],) if own else registry.DATASETS[config.dataset].sources


def _streamed(config) -> bool:
  return (not own_data.parse(config.dataset)
          and registry.DATASETS[config.dataset].streamed)


def _check_models(config) -> None:
  """model, teacher (unless method 'none'), teacher_checkpoint, dtype."""
  _one_of('model', config.model, models.MODEL_NAMES)
  if config.method == 'none':
    return
  _one_of('teacher', config.teacher, models.MODEL_NAMES)
  if not config.teacher_checkpoint:
    _fail('teacher_checkpoint', config.teacher_checkpoint,
          f'method {config.method!r} needs an exported teacher directory '
          '(train one with configs/teacher.py).')


def _check_method(config) -> None:
  """method and compare_to: names of methods.METHODS ('' = no comparison)."""
  for field in ('method',) + (('compare_to',) if config.compare_to else ()):
    methods.check_method(config[field], field)
  predictors = [methods.TERMS[t].predicted_by
                for t in methods.METHODS[config.method]
                if methods.TERMS[t].predicted_by]
  if config.export and predictors:
    _fail('export', config.export,
          f'method {config.method!r} predicts with {predictors[0]}, which '
          'an export of the student alone does not hold; use '
          '--config.export=False.')


def _check_points(config) -> None:
  """points (stage numbers) and point_weights: the same length.

  Whether each point is a stage of the model needs its stage count:
  objective.create checks that.
  """
  points, weights = config.points, config.point_weights
  if (not isinstance(points, (tuple, list))
      or not all(isinstance(k, int) and not isinstance(k, bool)
                 for k in points)):
    _fail('points', points,
          'use a tuple of stage numbers, e.g. --config.points="(2,)".')
  if (not isinstance(weights, (tuple, list))
      or not all(isinstance(w, (int, float)) for w in weights)):
    _fail('point_weights', weights,
          'use a tuple of numbers, e.g. --config.point_weights="(1.0,)".')
  used = any(_uses(config, t) for t in methods.POINT_TERMS)
  if len(points) != len(weights) or (used and not points):
    raise ValueError(
        f'config.points={tuple(points)} and config.point_weights='
        f'{tuple(weights)} must be non-empty and of the same length.')


def _check_loss(config) -> None:
  """Every loss weight finite, loss.adain_kind, loss.adain_stats (from
  losses), the temperatures and the AdaIN warm-up."""
  for field, value in config.loss.items():
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
        and not math.isfinite(value)):
      _fail(f'loss.{field}', value, 'it must be a finite number (a NaN or '
            'infinite weight makes every step non-finite).')
  _one_of('loss.adain_kind', config.loss.adain_kind, losses.ADAIN_LOSS_KINDS,
          quote=True)
  _one_of('loss.adain_stats', config.loss.adain_stats, losses.ADAIN_STATS,
          quote=True)
  for field in ('temperature', 'adain_temperature'):
    if config.loss[field] <= 0:
      _fail(f'loss.{field}', config.loss[field], 'it must be > 0.')
  if config.loss.adain_warmup_epochs < 0:
    _fail('loss.adain_warmup_epochs', config.loss.adain_warmup_epochs,
          'it must be >= 0 (0 = no warm-up).')


def _check_baselines(config) -> None:
  """crd.* (sizes, temperature, momentum; class-aware needs labels),
  simkd.factor."""
  if _uses(config, 'simkd'):  # Older recordings have no simkd group.
    factor = config.simkd.factor
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
      _fail('simkd.factor', factor, 'use an int >= 1 (published: 2).')
  for field in ('dim', 'num_negatives'):
    if config.crd[field] < 1:
      _fail(f'crd.{field}', config.crd[field], 'it must be >= 1.')
  if config.crd.temperature <= 0:
    _fail('crd.temperature', config.crd.temperature, 'it must be > 0.')
  if not 0 <= config.crd.momentum <= 1:
    _fail('crd.momentum', config.crd.momentum, 'it must be in [0, 1].')
  if (_uses(config, 'crd') and config.crd.class_aware
      and _streamed(config)):
    _fail('crd.class_aware', True,
          'it needs every training label up front, which streamed data sets '
          f'({config.dataset}) do not read; set '
          '--config.crd.class_aware=False.')


def _check_optimisation(config) -> None:
  """Training length, learning rate, schedule, momentum, weight decay and
  the first phase of the methods that have one (init_epochs)."""
  for field in _POSITIVE_INTS:
    if int(config[field]) < 1:
      _fail(field, config[field], 'it must be a positive integer.')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    _fail('num_epochs', config.num_epochs,
          'set a positive num_epochs or num_train_steps.')
  _one_of('schedule', config.schedule, steps.SCHEDULES, quote=True)
  if config.learning_rate <= 0:
    _fail('learning_rate', config.learning_rate, 'it must be > 0.')
  if config.warmup_epochs < 0:
    _fail('warmup_epochs', config.warmup_epochs, 'it must be >= 0.')
  if not 0 <= config.momentum < 1:
    _fail('momentum', config.momentum, 'it must be in [0, 1).')
  if config.weight_decay < 0:
    _fail('weight_decay', config.weight_decay, 'it must be >= 0.')
  if methods.has_first_phase(config.method):
    if config.init_epochs < 0:
      _fail('init_epochs', config.init_epochs, 'it must be >= 0.')
    if config.init_learning_rate < 0:
      _fail('init_learning_rate', config.init_learning_rate,
            'it must be > 0, or 0 for config.learning_rate.')
    if config.num_train_steps <= 0 and config.init_epochs >= config.num_epochs:
      _fail('init_epochs', config.init_epochs,
            f'the first phase must be shorter than the run (num_epochs='
            f'{config.num_epochs}, which counts it); lower it or raise '
            'num_epochs.')


def _check_run(config) -> None:
  """eval_every_epochs, dtype and grid_layout."""
  if config.eval_every_epochs <= 0:
    _fail('eval_every_epochs', config.eval_every_epochs, 'it must be > 0.')
  _one_of('dtype', config.dtype, models.DTYPES, quote=True)
  _one_of('grid_layout', config.grid_layout, GRID_LAYOUTS, quote=True)
