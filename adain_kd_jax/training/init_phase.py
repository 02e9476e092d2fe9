"""The first training phase of AB, FT and FSP (RepDistiller's `init()`).

A method whose terms name `init_trains` (methods.base.Term) trains in two
phases inside the run's one jitted step, the phase read from `state.step`:

  1. steps 0 .. n-1, n = round(config.init_epochs x steps per epoch)
     (`Distiller.init_steps`): the loss is the sum of those terms'
     `init_loss` (objective.Distiller.loss_fn), and only the params under
     their `init_trains` keys move, the student's classifier `fc` excepted
     (RepDistiller's `get_feat_modules()`: every module but the
     classifier). The optimiser is RepDistiller's `init()`'s: SGD at the
     constant `first_phase_rate(config)` (config.init_learning_rate, or
     config.learning_rate when that is 0) with config.momentum and
     config.weight_decay (torch order: g + wd p, then momentum), on those
     params alone.
  2. steps n .. total-1: the run's own objective and optimiser
     (`steps.create_optimizer`), its schedule offset by n (a cosine over
     total - n steps, decay epochs and warm-up counted from the phase's
     end), over every param but the modules only the phase trains (the
     adapters named in `init_trains`: AB's connectors, FT's paraphraser),
     which stay as the phase left them: RepDistiller's optimiser of the
     distillation leaves them out.

The two optimisers keep separate states (`PhasedState`); the main one is
not touched during the first phase, so its momentum starts at zero and its
schedule at its own step 0 when the phase ends, as RepDistiller's new
`optim.SGD` for the distillation. The phase is counted in the run's steps:
config.num_epochs (or num_train_steps) includes it. Resume, the grid and
checkpoints see one state and one program, as for any other method.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class PhasedState(NamedTuple):
  """The optimiser state of a run with a first phase."""
  init: Any  # The first phase's SGD (its params only).
  main: Any  # The run's optimiser, untouched until the phase ends.


def check_length(config, init_steps: int, total_steps: int) -> None:
  """ValueError naming config.init_epochs unless the phase leaves steps
  for the distillation (0 <= init steps < total steps)."""
  if config.init_epochs < 0 or init_steps >= total_steps:
    raise ValueError(
        f'config.init_epochs={config.init_epochs} is invalid: the first phase '
        f'({init_steps} steps) must be >= 0 and shorter than the run '
        f'({total_steps} steps); lower it or train longer.')


def phase_labels(init_trains: tuple[str, ...]):
  """params -> a pytree of 'init' (trained in the first phase) or 'frozen'
  (every key outside `init_trains`, and the student's classifier 'fc')."""

  def labels(params):
    def label(path, _):
      top = path[0].key
      frozen = top not in init_trains or (
          top == 'student' and len(path) > 1 and path[1].key == 'fc')
      return 'frozen' if frozen else 'init'
    return jax.tree_util.tree_map_with_path(label, params)

  return labels


def main_labels(init_trains: tuple[str, ...]):
  """params -> 'main', or 'frozen' under the adapter keys of
  `init_trains` (the modules only the first phase trains)."""
  frozen = tuple(k for k in init_trains if k != 'student')

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: 'frozen' if path[0].key in frozen else 'main',
        params)

  return labels


def first_phase_rate(config) -> float:
  """The first phase's constant learning rate: config.init_learning_rate,
  or config.learning_rate when that is 0."""
  return config.init_learning_rate or config.learning_rate


def init_optimizer(config, init_trains: tuple[str, ...]):
  """RepDistiller's `init()` optimiser on the phase's params only."""
  sgd = optax.chain(optax.add_decayed_weights(config.weight_decay),
                    optax.sgd(first_phase_rate(config),
                              momentum=config.momentum))
  return optax.multi_transform({'init': sgd, 'frozen': optax.set_to_zero()},
                               phase_labels(init_trains))


def with_init_phase(config, distiller, main_tx, main_schedule):
  """(tx, schedule) of a run with a first phase of
  `distiller.init_steps` steps.

  `tx.update(grads, state, params, step=state.step)` applies the first
  phase's optimiser before step n, the run's `main_tx` from then on;
  `schedule(step)` is the rate the step applies (the constant rate, then
  `main_schedule(step - n)`).
  """
  n = distiller.init_steps
  init_tx = init_optimizer(config, distiller.init_trains)
  main_tx = optax.multi_transform(
      {'main': optax.with_extra_args_support(main_tx),
       'frozen': optax.set_to_zero()}, main_labels(distiller.init_trains))

  def init_fn(params):
    return PhasedState(init=init_tx.init(params), main=main_tx.init(params))

  def update_fn(grads, state, params=None, *, step=None, **extra_args):
    if step is None:
      raise ValueError('A run with a first phase updates with '
                       'tx.update(..., step=state.step).')

    def first(_):
      updates, s = init_tx.update(grads, state.init, params)
      return updates, state._replace(init=s)

    def main(_):
      updates, s = main_tx.update(grads, state.main, params, **extra_args)
      return updates, state._replace(main=s)

    return jax.lax.cond(jnp.asarray(step) < n, first, main, None)

  def schedule(step):
    return jnp.where(jnp.asarray(step) < n, first_phase_rate(config),
                     main_schedule(jnp.maximum(jnp.asarray(step) - n, 0)))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn), schedule
