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
bit for bit. `config.grid_layout` lays the members out in one jitted program
as a Python loop ('loop', the default) or, for a full methods x seeds table,
as one seed's program (its batch, teacher forward and every member's
update) mapped over the seeds with `jax.vmap` ('vmap': each convolution
becomes a grouped one; on XLA:CPU a 12-member table ran 2.35x slower than
the loop: benchmarks/grid_layout.py).
Stateful terms, warm-ups and the non-finite guard are each
member's own: they live in its TrainState and its static step arguments.
"""

import dataclasses
import functools
import json
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import optax

from adain_kd_jax.data import augment
from adain_kd_jax.methods import objective
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import steps


@dataclasses.dataclass(frozen=True)
class MemberStep:
  """A member's static step arguments."""
  distiller: objective.Distiller
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  skip_nonfinite: bool


def _slot_step(states, teacher_vars, batch, *, members, prep):
  """One step of one seed's members (`states` and `members` in order).

  One member alone gets the solo step unchanged. Otherwise the batch is
  preprocessed once, the teacher's forward runs once where two or more
  members distill, and each member's loss and update follow.
  """
  if len(members) == 1:
    m = members[0]
    state, metrics = steps.train_step(
        states[0], teacher_vars, batch, distiller=m.distiller, tx=m.tx,
        schedule=m.schedule, prep=prep, skip_nonfinite=m.skip_nonfinite)
    return (state,), (metrics,)
  rng = jax.random.fold_in(prep.key, states[0].step)
  images = augment.preprocess_train(
      batch['image'], rng, mean=prep.mean, std=prep.std,
      crop_padding=prep.crop_padding, flip=prep.flip)
  distilling = [m.distiller.teacher is not None for m in members]
  teacher_out = None
  if sum(distilling) > 1:
    teacher_out = members[distilling.index(True)].distiller.teacher_outputs(
        teacher_vars, images)
  out = [steps.update_step(
      state, teacher_vars, dict(batch, image=images),
      jax.random.fold_in(rng, 1), distiller=m.distiller, tx=m.tx,
      schedule=m.schedule, skip_nonfinite=m.skip_nonfinite,
      teacher_out=teacher_out if shares else None)
         for state, m, shares in zip(states, members, distilling)]
  return tuple(o[0] for o in out), tuple(o[1] for o in out)


def grid_train_step(states, teacher_vars, batches, *, members, preps,
                    slots, layout='loop'):
  """One training step of every member.

  Args:
    states: a tuple of TrainStates, one per member (all at the same step).
    teacher_vars: a tuple, per seed slot, of the teacher's variables (None
      where no member of the slot has a teacher).
    batches: a tuple, per seed slot, of that seed's batch.
    members: the `MemberStep`s (static).
    preps: per seed slot, its `steps.Preprocess` (static).
    slots: per seed slot, the indices of its members (static); with
      layout 'vmap', every slot's members in the same order of settings.
    layout: 'loop' (the slots one after the other) or 'vmap' (the slots
      stacked under jax.vmap: one program for one seed, mapped over seeds).

  Returns:
    (states, metrics): tuples, one entry per member.
  """
  new_states, metrics = [None] * len(members), [None] * len(members)
  if layout == 'vmap':
    stack = lambda *xs: jnp.stack(xs)
    stacked = tuple(jax.tree.map(stack, *(states[idx[j]] for idx in slots))
                    for j in range(len(slots[0])))
    keys = jnp.stack([p.key for p in preps])
    one_seed = lambda st, batch, key: _slot_step(
        st, teacher_vars[0], batch, members=[members[i] for i in slots[0]],
        prep=dataclasses.replace(preps[0], key=key))
    out_states, out_metrics = jax.vmap(one_seed)(
        stacked, jax.tree.map(stack, *batches), keys)
    for s, idx in enumerate(slots):
      for j, i in enumerate(idx):
        new_states[i] = jax.tree.map(lambda x, s=s: x[s], out_states[j])
        metrics[i] = jax.tree.map(lambda x, s=s: x[s], out_metrics[j])
    return tuple(new_states), tuple(metrics)
  for slot, idx in enumerate(slots):
    out_states, out_metrics = _slot_step(
        tuple(states[i] for i in idx), teacher_vars[slot], batches[slot],
        members=[members[i] for i in idx], prep=preps[slot])
    for i, state, m in zip(idx, out_states, out_metrics):
      new_states[i], metrics[i] = state, m
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


def jit_grid_multi_step(mesh, members, preps, slots, layout='loop'):
  """`grid_multi_step` jitted: batches [k, B, ...] sharded on B, states
  replicated and donated."""
  replicated = NamedSharding(mesh, P())
  step_fn = functools.partial(
      grid_train_step, members=tuple(members), preps=tuple(preps),
      slots=tuple(tuple(idx) for idx in slots), layout=layout)
  return jax.jit(
      functools.partial(grid_multi_step, step_fn=step_fn),
      in_shardings=(replicated, replicated,
                    NamedSharding(mesh, P(None, 'data'))),
      out_shardings=(replicated, replicated), donate_argnums=(0,))


def grid_eval_step(states, teacher_vars, batch, *, distillers, prep):
  """`steps.eval_step` of every member of one seed on one batch: a tuple
  of sums of correct predictions, loss and examples, one per member
  (`teacher_vars`: the seed slot's, for a model that predicts through the
  teacher)."""
  images = augment.preprocess_eval(batch['image'], mean=prep.mean,
                                   std=prep.std)
  out = []
  for state, distiller in zip(states, distillers):
    logits = distiller.predict(state.params, state.batch_stats, images,
                               teacher_vars)
    out.append(steps.eval_sums(logits, batch))
  return tuple(out)


def jit_grid_eval_step(mesh, distillers, prep):
  """`grid_eval_step` jitted: the batch sharded, the states replicated."""
  return jax.jit(
      functools.partial(grid_eval_step, distillers=tuple(distillers),
                        prep=prep),
      in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P()),
                    NamedSharding(mesh, P('data'))),
      out_shardings=NamedSharding(mesh, P()))


States = tuple[steps.TrainState, ...]  # One per member.
# `jit_grid_multi_step`'s: (states, per seed slot the teacher's variables or
# None, per slot its batches stacked over k steps) -> (states, per member
# its metrics stacked over the k steps).
GridMultiStep = Callable[
    [States, tuple[steps.Variables | None, ...], tuple[steps.Batch, ...]],
    tuple[States, tuple[steps.Metrics, ...]]]
# `jit_grid_eval_step`'s: (states of one slot's members, the slot's
# teacher variables or None, batch) -> per member the sums of
# `steps.eval_step`.
GridEvalStep = Callable[[States, steps.Variables | None, steps.Batch],
                        tuple[steps.Metrics, ...]]


@dataclasses.dataclass(frozen=True)
class GridSteps:
  """A grid's jitted steps and what they read per seed slot."""
  slots: list[list[int]]  # Per seed (first seen first), its members.
  slot_runs: list[run_lib.Run]  # Per seed, its first member's run.
  multi_step: GridMultiStep
  eval_steps: list[GridEvalStep]  # Per seed.
  teacher_vars: tuple[steps.Variables | None, ...]  # Per seed.
  layout: str  # The layout the training step uses ('loop' or 'vmap').


def config_key(config, omit: Sequence[str] = ()) -> str:
  """`config` as one string, but for the fields `omit` names: two configs
  with one key differ only there."""
  fields = config.to_dict()
  for name in omit:
    fields.pop(name, None)
  return json.dumps(fields, sort_keys=True, default=str)


def _setting(run: run_lib.Run) -> str:
  """What a member is but for its seed (members of one setting at two seeds
  are one program under vmap)."""
  return config_key(run.config, omit=('seed',))


def vmap_slots(runs: Sequence[run_lib.Run], slots: list[list[int]]
               ) -> tuple[list[list[int]] | None, str]:
  """The slots reordered so that every seed lists the same settings in the
  same order (what the vmap layout stacks), or (None, why not)."""
  ordered = [sorted(idx, key=lambda i: _setting(runs[i])) for idx in slots]
  settings = [[_setting(runs[i]) for i in idx] for idx in ordered]
  if len(slots) < 2:
    return None, 'one seed has nothing to stack'
  if any(s != settings[0] for s in settings[1:]):
    return None, 'its seeds do not all have the same members'
  return ordered, ''


def seed_slots(runs: Sequence[run_lib.Run]) -> list[list[int]]:
  """Per seed (first seen first), the indices of its runs."""
  seeds = list(dict.fromkeys(int(r.config.seed) for r in runs))
  return [[i for i, r in enumerate(runs) if int(r.config.seed) == seed]
          for seed in seeds]


def build_grid_steps(runs: Sequence[run_lib.Run]) -> GridSteps:
  """The jitted train and eval steps of a grid of `runs` (its members, in
  order), by seed slot, in the layout `config.grid_layout` asks for (the
  loop where the vmap layout cannot stack the grid; it says why)."""
  slots = seed_slots(runs)
  layout = runs[0].config.get('grid_layout', 'loop')
  if layout == 'vmap':
    ordered, why = vmap_slots(runs, slots)
    if ordered is None:
      print(f'grid_layout vmap: {why}; this grid of {len(runs)} runs as a '
            'loop.', flush=True)
      layout = 'loop'
    else:
      slots = ordered
  slot_runs = [runs[idx[0]] for idx in slots]
  preps = [run_lib.make_preprocess(r.config, r.dataset_info)
           for r in slot_runs]
  spec = [MemberStep(distiller=r.distiller, tx=r.tx, schedule=r.schedule,
                 skip_nonfinite=bool(r.config.skip_nonfinite)) for r in runs]
  multi_step = jit_grid_multi_step(runs[0].mesh, spec, preps, slots, layout)
  eval_steps = [
      jit_grid_eval_step(runs[0].mesh, [runs[i].distiller for i in idx],
                         preps[s]) for s, idx in enumerate(slots)]
  teacher_vars = tuple(next(
      (runs[i].teacher_vars for i in idx
       if runs[i].teacher_vars is not None), None) for idx in slots)
  return GridSteps(slots=slots, slot_runs=slot_runs, multi_step=multi_step,
                   eval_steps=eval_steps, teacher_vars=teacher_vars,
                   layout=layout)
