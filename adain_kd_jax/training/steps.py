"""The jitted steps: state, optimiser, one training step, k steps, eval.

One `jax.jit` step over a `Mesh` of all devices, the batch sharded over the
'data' axis and everything else replicated (BatchNorm statistics are then
over the global batch). `multi_step` runs k steps in one call (`lax.scan`)
and can gather its batches from a training set kept on the devices, so that
small batches are not bound by per-call dispatch and host transfers.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from adain_kd_jax.data import augment
from adain_kd_jax.methods import objective
from adain_kd_jax.training import dot_step


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any  # {'student': ..., 'connector': ...}
  batch_stats: Any
  opt_state: Any
  skipped: jax.Array  # Steps skipped for a non-finite loss or gradient.
  # The stateful terms' state by name, never optimised (CRD's memory bank);
  # checkpoints before 2026-12 call it 'aux' (checkpoints.RENAMED_KEYS).
  term_state: Any


# A network's flax variables: {'params': ..., 'batch_stats': ...}.
Variables = dict[str, Any]
# A batch of arrays: 'image', 'label'; 'mask' (evaluation), 'index'.
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]  # A step's metrics by name.
# `jit_multi_step`'s: (state, teacher's variables or None, the training set
# on the devices or None, batches stacked over k steps) -> (state, metrics
# stacked over the k steps).
MultiStep = Callable[[TrainState, Variables | None, Batch | None, Batch],
                     tuple[TrainState, Metrics]]
# `jit_eval_step`'s: (state, teacher's variables or None, batch) ->
# {'correct', 'loss', 'count'} sums.
EvalStep = Callable[[TrainState, Variables | None, Batch], Metrics]


# Learning-rate schedules (config.schedule).
SCHEDULES = ('cosine', 'piecewise')


def create_optimizer(config, steps_per_epoch: int, total_steps: int):
  """SGD with momentum, weight decay on all parameters, and a schedule."""
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, max(total_steps, warmup + 1))
  elif config.schedule == 'piecewise':
    schedule = optax.piecewise_constant_schedule(
        config.learning_rate,
        {int(e * steps_per_epoch): config.decay_factor
         for e in config.decay_epochs})
    if warmup:
      schedule = optax.join_schedules(
          [optax.linear_schedule(0.0, config.learning_rate, warmup),
           schedule], [warmup])
  else:
    raise ValueError(f'Unknown config.schedule={config.schedule!r}; use '
                     "'cosine' or 'piecewise'.")
  # torch.optim.SGD order: g + wd * p, then momentum, then the learning rate.
  tx = optax.chain(optax.add_decayed_weights(config.weight_decay),
                   optax.sgd(schedule, momentum=config.momentum))
  return tx, schedule


def init_state(distiller, tx, image_shape, rng, num_train: int = 0,
               train_labels=None) -> TrainState:
  """A fresh TrainState (step 0) for `distiller`'s student and extras.

  `num_train` (and `train_labels`, all training labels, for class-aware
  negatives) size CRD's memory bank; other methods ignore them. Jitted: an
  eager initialisation runs op by op (30 s for a MobileNetV2 on a CPU);
  inside another jit (the run's sharded init, run.py) it is inlined.
  """
  if train_labels is not None:
    num_train = len(train_labels)

  def init(rng):
    init_rng, term_rng = jax.random.split(rng)
    variables = distiller.init(init_rng,
                               jnp.zeros((1, *image_shape), jnp.float32))
    return TrainState(
        step=jnp.array(0, jnp.int32), params=variables['params'],
        batch_stats=variables['batch_stats'],
        opt_state=tx.init(variables['params']),
        skipped=jnp.array(0, jnp.int32),
        term_state=distiller.init_term_state(term_rng, num_train,
                                              train_labels))

  return jax.jit(init)(rng)


def train_step(state, teacher_vars, batch, *, distiller, tx, schedule, prep,
               skip_nonfinite=False):
  """One optimisation step of the student (and its trained modules).

  `metrics['finite']` says whether every loss term and the gradient norm were
  finite. With `skip_nonfinite`, a non-finite step leaves params, batch stats
  and optimizer state as they were (the step counter and the data still
  advance) and counts itself in `state.skipped`.
  """
  rng = jax.random.fold_in(prep.key, state.step)
  images = augment.preprocess_train(
      batch['image'], rng, mean=prep.mean, std=prep.std,
      crop_padding=prep.crop_padding, flip=prep.flip)
  return update_step(state, teacher_vars, dict(batch, image=images),
                     jax.random.fold_in(rng, 1), distiller=distiller, tx=tx,
                     schedule=schedule, skip_nonfinite=skip_nonfinite)


def update_step(state, teacher_vars, batch, rng, *, distiller, tx, schedule,
                skip_nonfinite=False, teacher_out=None):
  """`train_step` after the augmentation: `batch['image']` preprocessed,
  `rng` the loss's key; `teacher_out` (optional) the teacher's outputs on
  these images, computed once for a grid's members (grid_step.py)."""
  nondiff_vars = objective.NondiffVars(batch_stats=state.batch_stats,
                                       term_state=state.term_state,
                                       teacher=teacher_vars)
  if distiller.dot:
    metrics, updated, grads, updates, opt_state = _dot_update(
        state, nondiff_vars, batch, rng, distiller=distiller, tx=tx,
        teacher_out=teacher_out)
  else:
    grad_fn = jax.value_and_grad(
        functools.partial(distiller.loss_fn, teacher_out=teacher_out),
        has_aux=True)
    (_, (metrics, updated)), grads = grad_fn(
        state.params, nondiff_vars, batch, rng, state.step)
    # The step selects the phase of a run with a first phase (init_phase.py);
    # other optimisers ignore it.
    updates, opt_state = optax.with_extra_args_support(tx).update(
        grads, state.opt_state, state.params, step=state.step)
  batch_stats, term_state = updated['batch_stats'], updated['term_state']
  params = optax.apply_updates(state.params, updates)
  metrics['grad_norm'] = optax.tree.norm(grads)
  finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
  new_state = TrainState(step=state.step + 1, params=params,
                         batch_stats=batch_stats, opt_state=opt_state,
                         skipped=state.skipped, term_state=term_state)
  if skip_nonfinite:
    keep = lambda new, old: jnp.where(finite, new, old)
    new_state = new_state.replace(
        params=jax.tree.map(keep, params, state.params),
        batch_stats=jax.tree.map(keep, batch_stats, state.batch_stats),
        opt_state=jax.tree.map(keep, opt_state, state.opt_state),
        term_state=jax.tree.map(keep, term_state, state.term_state),
        skipped=state.skipped + (~finite).astype(jnp.int32))
  metrics['lr'] = schedule(state.step)
  metrics['finite'] = finite
  metrics['skipped'] = new_state.skipped
  return new_state, metrics


def _dot_update(state, nondiff_vars, batch, rng, *, distiller, tx,
                teacher_out):
  """`update_step`'s gradient and update for a method trained with DOT:
  the task and distillation gradients apart (one forward pass), both to
  DOT's transformation; `grads`, their sum, for the gradient norm."""
  metrics, updated, (g_task, g_kd) = dot_step.value_and_grads(
      distiller, state.params, nondiff_vars, batch, rng, state.step,
      teacher_out=teacher_out)
  updates, opt_state = tx.update((g_task, g_kd), state.opt_state,
                                 state.params)
  return (metrics, updated, jax.tree.map(jnp.add, g_task, g_kd), updates,
          opt_state)


def eval_step(state, teacher_vars, batch, *, distiller, prep):
  """Sums of correct predictions, loss and examples (padding masked out)
  of the method's model (`Distiller.predict`: the student's logits, or
  those of the term that declares `Needs.predicts`, which may read
  `teacher_vars`)."""
  images = augment.preprocess_eval(batch['image'], mean=prep.mean,
                                   std=prep.std)
  logits = distiller.predict(state.params, state.batch_stats, images,
                             teacher_vars)
  return eval_sums(logits, batch)


def eval_sums(logits, batch):
  """`eval_step`'s sums for the model's `logits` on `batch`."""
  mask = batch['mask']
  logp = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(logp, batch['label'][:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  return {'correct': jnp.sum(correct * mask), 'loss': jnp.sum(nll * mask),
          'count': jnp.sum(mask)}


def create_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over all devices (of all hosts), axis 'data'."""
  devices = jax.devices() if devices is None else devices
  # Auto axis types: explicit sharding types (the default of make_mesh on
  # newer JAX) reject the plain jitted step.
  return jax.make_mesh((len(devices),), ('data',), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def to_global(mesh: jax.sharding.Mesh, batch, spec=P('data')):
  """Host-local arrays -> global arrays on `mesh` (`spec` sharding)."""
  sharding = NamedSharding(mesh, spec)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def jit_eval_step(mesh, distiller, prep):
  """The jitted eval step: batch sharded, state and teacher replicated."""
  return jax.jit(
      functools.partial(eval_step, distiller=distiller, prep=prep),
      in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P()),
                    NamedSharding(mesh, P('data'))),
      out_shardings=NamedSharding(mesh, P()))


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """The settings of the on-device preprocessing (static under jit): the
  augmentation key, the data set's mean and std, crop and flip."""
  key: jax.Array  # Folded with the step for each step's augmentation.
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int
  flip: bool


def multi_step(state, teacher_vars, data, batches, *, step_fn):
  """`len(batches)` training steps in one call.

  Args:
    state: the TrainState (donated).
    teacher_vars: the frozen teacher's variables.
    data: None (`batches` hold images and labels), or {'image', 'label'}:
      the whole training set on the devices, gathered by `batches['index']`.
    batches: a batch dict whose arrays have a leading axis of k steps.
    step_fn: `train_step` with its static arguments bound.

  Returns:
    (state, metrics), each metric stacked over the k steps.
  """
  def body(state, batch):
    if data is not None:
      batch = dict(batch,
                   image=jnp.take(data['image'], batch['index'], axis=0),
                   label=jnp.take(data['label'], batch['index'], axis=0))
    return step_fn(state, teacher_vars, batch)

  k = jax.tree.leaves(batches)[0].shape[0]
  if k == 1:
    # No loop for a single step: XLA:CPU runs the convolutions of a loop
    # body about 10x slower than the same step outside a loop.
    state, metrics = body(state, jax.tree.map(lambda x: x[0], batches))
    return state, jax.tree.map(lambda m: m[None], metrics)
  return jax.lax.scan(body, state, batches)


def jit_multi_step(mesh, distiller, tx, schedule, prep,
                   skip_nonfinite=False):
  """`multi_step` jitted: batches [k, B, ...] sharded on B, state donated."""
  replicated = NamedSharding(mesh, P())
  step_fn = functools.partial(train_step, distiller=distiller, tx=tx,
                              schedule=schedule, prep=prep,
                              skip_nonfinite=skip_nonfinite)
  return jax.jit(
      functools.partial(multi_step, step_fn=step_fn),
      in_shardings=(replicated, replicated, replicated,
                    NamedSharding(mesh, P(None, 'data'))),
      out_shardings=(replicated, replicated), donate_argnums=(0,))
