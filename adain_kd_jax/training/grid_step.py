"""The jitted steps of a grid: many members (runs) in one program.

A grid trains several runs that differ only in what a member may change
(`grid.MEMBER_FIELDS`: the method, its weights and settings, the seed, the
optimiser's scalars) on one student, one teacher, one data set and one
schedule. Members of one seed see the same batches and the same
augmentation (both pure functions of (seed, step)), so per step and per seed
the grid step

  1. preprocesses the seed's batch once,
  2. runs the teacher's forward once (under stop_gradient), where two or more
     members of that seed distill,
  3. runs every member's loss and update on them (`steps.update_step`).

A member alone on its seed gets today's solo step unchanged: its teacher runs
inside its loss, as in `steps.train_step`, so a grid of one is the solo step
bit for bit. Members are laid out as a Python loop in one jitted program
(stacking them under `jax.vmap` was 1.66x slower on XLA:CPU, and it cannot
mix methods). Stateful terms, warm-ups and the non-finite guard are each
member's own: they live in its TrainState and its static step arguments.
"""

import dataclasses
import functools
from typing import Callable, Sequence

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from adain_kd_jax.data import augment
from adain_kd_jax.methods import objective
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import steps


@dataclasses.dataclass(frozen=True)
class Member:
  """A member's static step arguments and the seed slot it reads."""
  distiller: objective.Distiller
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  skip_nonfinite: bool
  slot: int  # Index into the grid's seeds (batches, preps, teachers).


def slot_members(members, slot):
  """Indices of the members that read seed slot `slot`."""
  return [i for i, m in enumerate(members) if m.slot == slot]


def grid_train_step(states, teacher_vars, batches, *, members, preps):
  """One training step of every member.

  Args:
    states: a tuple of TrainStates, one per member (all at the same step).
    teacher_vars: a tuple, per seed slot, of the teacher's variables (None
      where no member of the slot has a teacher).
    batches: a tuple, per seed slot, of that seed's batch.
    members: the `Member`s (static).
    preps: per seed slot, its `steps.Preprocess` (static).

  Returns:
    (states, metrics): tuples, one entry per member.
  """
  new_states, metrics = list(states), [None] * len(members)
  for slot, (prep, batch) in enumerate(zip(preps, batches)):
    idx = slot_members(members, slot)
    distilling = [i for i in idx if members[i].distiller.teacher is not None]
    if len(idx) == 1:  # Nothing to share: the solo step as it is.
      m = members[idx[0]]
      new_states[idx[0]], metrics[idx[0]] = steps.train_step(
          states[idx[0]], teacher_vars[slot], batch, distiller=m.distiller,
          tx=m.tx, schedule=m.schedule, prep=prep,
          skip_nonfinite=m.skip_nonfinite)
      continue
    rng = jax.random.fold_in(prep.key, states[idx[0]].step)
    images = augment.preprocess_train(
        batch['image'], rng, mean=prep.mean, std=prep.std,
        crop_padding=prep.crop_padding, flip=prep.flip)
    teacher_out = None
    if len(distilling) > 1:
      teacher_out = members[distilling[0]].distiller.teacher_outputs(
          teacher_vars[slot], images)
    for i in idx:
      m = members[i]
      new_states[i], metrics[i] = steps.update_step(
          states[i], teacher_vars[slot], dict(batch, image=images),
          jax.random.fold_in(rng, 1), distiller=m.distiller, tx=m.tx,
          schedule=m.schedule, skip_nonfinite=m.skip_nonfinite,
          teacher_out=teacher_out if i in distilling else None)
  return tuple(new_states), tuple(metrics)


def grid_multi_step(states, teacher_vars, batches, *, step_fn):
  """k grid steps in one call (batches with a leading axis of k steps);
  as `steps.multi_step`, no loop for one step."""
  k = jax.tree.leaves(batches)[0].shape[0]
  body = lambda s, b: step_fn(s, teacher_vars, b)
  if k == 1:
    states, metrics = body(states, jax.tree.map(lambda x: x[0], batches))
    return states, jax.tree.map(lambda m: m[None], metrics)
  return jax.lax.scan(body, states, batches)


def jit_grid_multi_step(mesh, members, preps):
  """`grid_multi_step` jitted: batches [k, B, ...] sharded on B, states
  replicated and donated."""
  replicated = NamedSharding(mesh, P())
  step_fn = functools.partial(grid_train_step, members=tuple(members),
                              preps=tuple(preps))
  return jax.jit(
      functools.partial(grid_multi_step, step_fn=step_fn),
      in_shardings=(replicated, replicated,
                    NamedSharding(mesh, P(None, 'data'))),
      out_shardings=(replicated, replicated), donate_argnums=(0,))


def grid_eval_step(states, batch, *, distillers, prep):
  """`steps.eval_step` of every member of one seed on one batch: a tuple
  of sums of correct predictions, loss and examples, one per member."""
  images = augment.preprocess_eval(batch['image'], mean=prep.mean,
                                   std=prep.std)
  out = []
  for state, distiller in zip(states, distillers):
    logits = distiller.predict(state.params, state.batch_stats, images)
    out.append(steps.eval_sums(logits, batch))
  return tuple(out)


def jit_grid_eval_step(mesh, distillers, prep):
  """`grid_eval_step` jitted: the batch sharded, the states replicated."""
  return jax.jit(
      functools.partial(grid_eval_step, distillers=tuple(distillers),
                        prep=prep),
      in_shardings=(NamedSharding(mesh, P()),
                    NamedSharding(mesh, P('data'))),
      out_shardings=NamedSharding(mesh, P()))


States = tuple[steps.TrainState, ...]  # One per member.
# `jit_grid_multi_step`'s: (states, per seed slot the teacher's variables or
# None, per slot its batches stacked over k steps) -> (states, per member
# its metrics stacked over the k steps).
GridMultiStep = Callable[
    [States, tuple[steps.Variables | None, ...], tuple[steps.Batch, ...]],
    tuple[States, tuple[steps.Metrics, ...]]]
# `jit_grid_eval_step`'s: (states of one slot's members, batch) -> per
# member the sums of `steps.eval_step`.
GridEvalStep = Callable[[States, steps.Batch], tuple[steps.Metrics, ...]]


@dataclasses.dataclass(frozen=True)
class GridSteps:
  """A grid's jitted steps and what they read per seed slot."""
  slots: list[list[int]]  # Per seed (first seen first), its members.
  slot_runs: list[run_lib.Run]  # Per seed, its first member's run.
  multi_step: GridMultiStep
  eval_steps: list[GridEvalStep]  # Per seed.
  teacher_vars: tuple[steps.Variables | None, ...]  # Per seed.


def build_grid_steps(runs: Sequence[run_lib.Run]) -> GridSteps:
  """The jitted train and eval steps of a grid of `runs` (its members, in
  order), by seed slot."""
  seeds = list(dict.fromkeys(int(r.config.seed) for r in runs))
  slots = [[i for i, r in enumerate(runs) if int(r.config.seed) == seed]
           for seed in seeds]
  slot_runs = [runs[idx[0]] for idx in slots]
  preps = [run_lib.make_preprocess(r.config, r.dataset_info)
           for r in slot_runs]
  spec = [Member(distiller=r.distiller, tx=r.tx, schedule=r.schedule,
                 skip_nonfinite=bool(r.config.skip_nonfinite),
                 slot=seeds.index(int(r.config.seed))) for r in runs]
  multi_step = jit_grid_multi_step(runs[0].mesh, spec, preps)
  eval_steps = [
      jit_grid_eval_step(runs[0].mesh, [runs[i].distiller for i in idx],
                         preps[s]) for s, idx in enumerate(slots)]
  teacher_vars = tuple(next(
      (runs[i].teacher_vars for i in idx
       if runs[i].teacher_vars is not None), None) for idx in slots)
  return GridSteps(slots=slots, slot_runs=slot_runs, multi_step=multi_step,
                   eval_steps=eval_steps, teacher_vars=teacher_vars)
