"""A run's step, built in one place: `build_step(config, mesh, ...)`.

From a config, the mesh and what the inputs are (the image shape, the number
of classes, the device-side preprocessing, the training set's size and
labels), `build_step` builds the model set (`objective.Distiller`), the
optimiser and its schedule, the state initialiser and the jitted train and
eval steps: a `StepParts`. `run.create_run` builds every run's step with it;
the step benchmark (benchmarks/step_throughput.py) and the step tests
(tests/test_distill.py, tests/test_zoo_steps.py) build theirs with it too,
so they time and test the step that trains.

The frozen teacher's variables are not built here: they are an argument of
every step call, loaded (`run.create_run`) or drawn at random (the
benchmark) for `StepParts.distiller.teacher`, which is None for a method
without a teacher.
"""

import dataclasses
import functools
from typing import Callable

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import optax

from adain_kd_jax.methods import objective
from adain_kd_jax.training import dot_step
from adain_kd_jax.training import init_phase
from adain_kd_jax.training import steps


@dataclasses.dataclass(frozen=True)
class StepParts:
  """What `build_step` builds.

  Attributes:
    distiller: the model set: student, teacher (or None), trained modules and
      the loss terms.
    tx: the optimiser (`steps.create_optimizer`).
    schedule: its learning-rate schedule (step -> rate).
    prep: the device-side preprocessing the steps apply.
    state_shapes: the shapes and dtypes of a fresh `steps.TrainState`
      (`jax.eval_shape`; no sharding).
    init_state: `init_state(key) -> TrainState` at step 0, jitted, the state
      replicated over the mesh.
    multi_step: `multi_step(state, teacher_vars, device_data, batches) ->
      (state, metrics)`: k training steps per call (`steps.jit_multi_step`;
      batches stacked on a leading axis of k, the state donated).
    eval_step: `eval_step(state, teacher_vars, batch)` -> sums of correct
      predictions, loss and examples of the method's model
      (`steps.jit_eval_step`).
  """
  distiller: objective.Distiller
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  prep: steps.Preprocess
  state_shapes: steps.TrainState  # Of jax.ShapeDtypeStruct leaves.
  init_state: Callable[[jax.Array], steps.TrainState]
  multi_step: steps.MultiStep
  eval_step: steps.EvalStep


def build_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
               num_classes: int, image_shape: tuple[int, ...],
               prep: steps.Preprocess, steps_per_epoch: int, total_steps: int,
               num_train: int = 0, train_labels=None) -> StepParts:
  """Builds the model set, optimiser, initialiser and jitted steps of `config`.

  Args:
    config: the run's config (method, models, loss, optimiser, schedule,
      skip_nonfinite).
    mesh: the devices the steps run on (`steps.create_mesh`): the batch is
      sharded over its 'data' axis, everything else replicated.
    num_classes: the data set's number of classes.
    image_shape: (H, W, C) of an input image.
    prep: the device-side preprocessing (augmentation key, mean and std).
    steps_per_epoch: for the schedule and the terms scheduled in epochs.
    total_steps: the training length, for the schedule; a method with a
      first phase (init_phase.py) spends config.init_epochs of it there.
    num_train: the number of training examples (sizes CRD's memory bank).
    train_labels: all training labels, or None (CRD's class-aware
      negatives; when given, its length is the number of examples).

  Returns:
    The `StepParts`. Nothing is compiled yet: the steps and the initialiser
    compile on their first call.

  Raises:
    ValueError: naming the config field, for a method, model, point or
      schedule that `objective.create` or `steps.create_optimizer` refuses,
      or a first phase as long as the run.
  """
  distiller = objective.create(config, num_classes, image_shape,
                               steps_per_epoch=steps_per_epoch)
  n = distiller.init_steps
  if distiller.init_trains:
    init_phase.check_length(config, n, total_steps)
  tx, schedule = steps.create_optimizer(config, steps_per_epoch,
                                        total_steps - n)
  if n:
    tx, schedule = init_phase.with_init_phase(config, distiller, tx, schedule)
  if distiller.dot:  # DOT's masks: which params each gradient reaches.
    tx = dot_step.create_optimizer(config, schedule, *dot_step.reach_masks(
        distiller, image_shape, num_train, train_labels))
  init = functools.partial(steps.init_state, distiller, tx, image_shape,
                           num_train=num_train, train_labels=train_labels)
  return StepParts(
      distiller=distiller, tx=tx, schedule=schedule, prep=prep,
      # The shapes do not depend on the key's value.
      state_shapes=jax.eval_shape(init, jax.random.key(0)),
      init_state=jax.jit(init, out_shardings=NamedSharding(mesh, P())),
      multi_step=steps.jit_multi_step(mesh, distiller, tx, schedule, prep,
                                      skip_nonfinite=config.skip_nonfinite),
      eval_step=steps.jit_eval_step(mesh, distiller, prep))
