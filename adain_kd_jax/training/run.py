"""A run built from a config, in one place: `create_run(config, workdir)`.

It checks the config, devices, data, teacher and disk before it touches the
workdir or compiles anything (errors are the user's: `cli.user_errors`), and
returns a `Run`: the mesh, the data, the model set (`objective.Distiller`), the
frozen teacher's variables, the optimiser, the state (restored from the
newest checkpoint in WORKDIR, or new), the jitted steps and the
checkpointer. Training (`loop.train`), the grid and the plots start
here. The model set, optimiser, initialiser and jitted steps come from
`step_builder.build_step`, which the step benchmark
(benchmarks/step_throughput.py) and the step tests call too: they time and
test the steps that train.
"""

import contextlib
import dataclasses
import logging as std_logging
import os
from typing import Any

from absl import logging as absl_logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from adain_kd_jax import cli
from adain_kd_jax.data import batching
from adain_kd_jax.data import loader
from adain_kd_jax.data import own_data
from adain_kd_jax.data import registry
from adain_kd_jax.methods import objective
from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import claims
from adain_kd_jax.training import config_checks
from adain_kd_jax.training import preflight
from adain_kd_jax.training import run_record
from adain_kd_jax.training import run_progress
from adain_kd_jax.training import step_builder
from adain_kd_jax.training import steps


@dataclasses.dataclass
class Run:
  """Everything a run needs (see the module docstring).

  `state` and `progress` are where the run starts: step 0, or the newest
  checkpoint's. `multi_step(state, teacher_vars, device_data, batches)`
  runs k training steps (batches stacked on a leading axis), `eval_step(
  state, teacher_vars, batch)` returns sums of correct predictions, loss
  and examples of the method's model.
  """
  config: ml_collections.ConfigDict
  workdir: str | None
  mesh: jax.sharding.Mesh
  data: loader.InMemoryData | loader.StreamingData
  dataset_info: registry.DatasetInfo  # Classes, image shape, mean, std.
  steps_per_epoch: int
  total_steps: int
  eval_every: int  # Steps between evaluations.
  distiller: objective.Distiller
  teacher_vars: steps.Variables | None  # None without a teacher.
  teacher_meta: dict[str, Any]  # Its teacher.json ({} for none or random).
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state: steps.TrainState
  progress: run_progress.RunProgress  # Carried from earlier segments.
  multi_step: steps.MultiStep
  eval_step: steps.EvalStep
  checkpointer: checkpoints.RunCheckpointer | None  # None without workdir.
  random_teacher: bool = False  # A mock-data run's teacher, drawn at random.
  claim: claims.Claim | None = None  # Held on WORKDIR while the run is open.

  @property
  def image_shape(self):
    return self.data.image_shape

  def close(self) -> None:
    """Stops input workers; completes in-flight checkpoint saves; releases
    the claim."""
    try:
      self.data.close()
      if self.checkpointer is not None:
        self.checkpointer.wait()
        self.checkpointer.close()
    finally:
      self.release_claim()

  def release_claim(self) -> None:
    """Releases WORKDIR's claim (claims.py), once its saves are done."""
    if self.claim is not None:
      self.claim.release()
      self.claim = None


class _NoMockMetadataWarning(std_logging.Filter):
  """Drops tfds' "Variant folder ... has no dataset_info.json": its mock sets
  ship without that file, so tfds says so on every mock run."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return 'has no dataset_info.json' not in record.getMessage()


@contextlib.contextmanager
def mock_data(config: ml_collections.ConfigDict):
  """tfds.testing.mock_data with config.mock_data examples (0: no mock),
  without tfds' warning about the mock's missing metadata."""
  if not config.get('mock_data', 0):
    yield
    return
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  quiet = _NoMockMetadataWarning()
  logger = absl_logging.get_absl_logger()
  logger.addFilter(quiet)
  try:
    with tfds.testing.mock_data(num_examples=config.mock_data):
      yield
  finally:
    logger.removeFilter(quiet)


def create_run(config: ml_collections.ConfigDict, workdir: str | None,
               resume_changes: tuple[str, ...] = (), data=None) -> Run:
  """Builds the run of `config` in `workdir` (see the module docstring).

  With `workdir` None nothing is written or restored: the state is new and
  there is no checkpointer (the grid benchmarks, the plots' "before").
  Otherwise WORKDIR/config.json records `config`; a resume under another
  config is refused (run_record.py) unless the fields that differ are named
  in `resume_changes` and may change.
  Call inside `mock_data(config)` for a config with `mock_data` set.
  A workdir is claimed first (claims.py: `claims.Claimed`, one line, if a
  live trainer holds it); `Run.close` (or `release_claim`) releases it.
  `data`: an open `loader.open_data(config, ...)` to use (the grid's members
  of one seed share theirs); the caller closes it.
  """
  with cli.user_errors():
    config_checks.check(config)
    # Before anything reads or writes the run: a claimed run is left alone.
    existed = workdir is not None and os.path.isdir(workdir)
    claim = None if workdir is None else _claim(workdir)
    try:
      run = _open(config, workdir, resume_changes, data)
    except BaseException:
      if claim is not None:
        claim.release()
        if not existed:  # Leave no empty workdir behind.
          with contextlib.suppress(OSError):
            os.rmdir(workdir)
      raise
    run.claim = claim
    return run


def _open(config, workdir, resume_changes, data):
  """create_run after the config check and the claim."""
  changes = ([] if workdir is None else
             run_record.check_resume(workdir, config, resume_changes))
  mesh = _mesh(config)
  if data is not None:
    return _create(config, workdir, mesh, data, changes)
  data = loader.open_data(config, jax.process_index(),
                          jax.process_count())
  try:
    return _create(config, workdir, mesh, data, changes)
  except BaseException:
    data.close()
    raise


def _claim(workdir: str) -> claims.Claim | None:
  """Process 0 claims `workdir` (claims.py); every process raises
  `claims.Claimed` if it could not."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    return None  # preflight.prepare_workdir says what is wrong.
  claim, error = None, ''
  if jax.process_index() == 0:
    try:
      claim = claims.acquire(workdir)
    except claims.Claimed as e:
      error = str(e)
    except OSError:
      pass  # Unwritable: preflight.prepare_workdir says so and how to fix it.
  if jax.process_count() == 1:
    if error:
      raise claims.Claimed(error)
    return claim
  ok = multihost_utils.process_allgather(np.array(not error))
  if not np.all(ok):
    raise claims.Claimed(error or f'{workdir} is claimed (process 0 says '
                         'by whom).')
  return claim


def _mesh(config):
  num_devices = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % num_devices:
      raise ValueError(
          f'config.{field}={config[field]} is not divisible by the '
          f'{num_devices} devices; use a multiple of {num_devices}.')
  return steps.create_mesh()


def _create(config, workdir, mesh, data, changes):
  """create_run after the mesh and the data."""
  info = data.info  # The registry's row, or a set named by path's facts.
  if config.batch_size > data.num_train:
    raise ValueError(
        f'config.batch_size={config.batch_size} is larger than the '
        f'{data.num_train} training examples; lower it.')
  steps_per_epoch = batching.steps_per_epoch(data.num_train,
                                             config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                 int(round(config.num_epochs * steps_per_epoch)))
  parts = step_builder.build_step(
      config, mesh, num_classes=info.num_classes,
      image_shape=data.image_shape, prep=make_preprocess(config, info),
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      num_train=data.num_train, train_labels=data.train_labels)
  teacher_vars, teacher_meta, random_teacher = _teacher(
      config, parts.distiller, info, data.image_shape, mesh)
  abstract_state = _placed(parts.state_shapes, NamedSharding(mesh, P()))
  ckpt, state, progress = None, None, run_progress.RunProgress()
  if workdir is not None:
    state_bytes = sum(x.size * x.dtype.itemsize
                      for x in jax.tree.leaves(abstract_state))
    preflight.prepare_workdir(
        workdir, state_bytes * (config.keep_checkpoints + 2) + 2**20)
    ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'),
                                       keep=config.keep_checkpoints)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(abstract_state)
      progress = run_progress.RunProgress.from_json(meta)
      progress = dataclasses.replace(progress, resumes=progress.resumes + 1)
      if changes:  # Allowed by the user (resume_changes): kept for the summary.
        step = int(jax.device_get(state.step))
        progress = dataclasses.replace(
            progress, config_changes=progress.config_changes + tuple(
                dict(c, at_step=step) for c in changes))
    if data.record is not None and state is not None:  # A resume.
      own_data.check_unchanged(workdir, data.record)
    if jax.process_index() == 0:
      run_record.write(workdir, config)
      if data.record is not None:  # A set named by path: what it was.
        run_record.write_json(
            os.path.join(workdir, own_data.DATASET_JSON), data.record)
  if state is None:
    state = parts.init_state(jax.random.key(config.seed))
  return Run(
      config=config, workdir=workdir, mesh=mesh, data=data,
      dataset_info=info,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      eval_every=max(1, int(round(config.eval_every_epochs
                                  * steps_per_epoch))),
      distiller=parts.distiller, teacher_vars=teacher_vars,
      teacher_meta=teacher_meta, tx=parts.tx, schedule=parts.schedule,
      state=state, progress=progress, multi_step=parts.multi_step,
      eval_step=parts.eval_step, checkpointer=ckpt,
      random_teacher=random_teacher)


def make_preprocess(config: ml_collections.ConfigDict,
                    info: registry.DatasetInfo) -> steps.Preprocess:
  """The device-side preprocessing of `config`'s run (augmentation key
  key(seed + 1), the data set's mean and std)."""
  return steps.Preprocess(key=jax.random.key(config.seed + 1),
                          mean=tuple(info.mean), std=tuple(info.std),
                          crop_padding=config.crop_padding, flip=config.flip)


def _teacher(config: ml_collections.ConfigDict,
             distiller: objective.Distiller, info: registry.DatasetInfo,
             image_shape: tuple[int, ...], mesh: jax.sharding.Mesh):
  """(variables, teacher.json meta, random?) of the frozen teacher.

  A mock-data run whose teacher_checkpoint holds no export gets a random
  teacher; otherwise the exported teacher is loaded and checked.
  """
  if distiller.teacher is None:
    return None, {}, False
  replicated = NamedSharding(mesh, P())
  teacher_dir = cli.resolve_path(config.teacher_checkpoint)
  if config.get('mock_data', 0) and not os.path.isfile(
      os.path.join(teacher_dir, checkpoints.TEACHER_JSON)):
    variables = jax.jit(
        lambda: distiller.teacher.init(
            jax.random.key(config.seed + 2),
            jnp.zeros((1, *image_shape), jnp.float32), train=False),
        out_shardings=replicated)()
    return variables, {}, True
  variables, meta = checkpoints.load_teacher(
      teacher_dir, model=config.teacher, num_classes=info.num_classes,
      abstract_variables=_placed(
          objective.teacher_variables_struct(distiller, image_shape),
          replicated))
  return variables, meta, False


def _placed(shapes, sharding):
  """Shapes and dtypes (`jax.eval_shape`) as abstract arrays on `sharding`:
  what orbax restores onto."""
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
      shapes)
