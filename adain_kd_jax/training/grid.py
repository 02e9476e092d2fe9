"""Many runs trained as one program: a table of methods x seeds (x settings).

`train_members([(config, workdir), ...])` trains every member that is not
finished. Members are ordinary runs: each is built by `run.create_run` in its
own workdir (its own checkpoints, restored on resume; `train.py` can resume
any member alone) and writes what a solo run writes there: metrics.jsonl,
TensorBoard events, summary.json (plus a 'grid' record: the members it ran
with, the layout and the XLA flags). A member whose summary.json exists is
not retrained, so adding seeds or methods to a finished table trains only
the new members.

Members go into one grid where they may share: the same config but for
`MEMBER_FIELDS` (so the same student, teacher, data, batch size and
schedule). Members of one seed share that seed's data, batches, augmentation
and, in the step, the teacher's forward (grid_step.py). A grid resumes from
the newest step that all its unfinished members saved (a run killed between
two members' saves rolls the newer ones back one checkpoint and resumes as
one grid, bit for bit); members that never saved start at step 0, and
members with no saved step in common train as separate grids by step, one
after the other.

What "equal" means: a grid of one is the solo step bit for bit. In a larger
grid each member computes the same functions of the same inputs as its solo
run, but XLA fuses a larger program differently, so a member agrees with its
solo run to rounding (tests/test_grid.py: losses within 1e-6 relative after
the first step) and, for some methods, bit for bit (which, on which
device: benchmarks/README.md, measured by benchmarks/grid_identity.py). The same grid rerun, or
stopped (SIGTERM, Ctrl-C) and resumed, is bit-identical.

A member whose loss turns non-finite (without config.skip_nonfinite) stops
being checkpointed and logged, with the solo run's message; the others go
on, and `train_members` reports it as {'failed': message}.
"""

import dataclasses
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from adain_kd_jax import methods
from adain_kd_jax.data import loader
from adain_kd_jax.training import claims
from adain_kd_jax.training import grid_step
from adain_kd_jax.training import loop
from adain_kd_jax.training import member as member_lib
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import run_progress
from adain_kd_jax.training import steps
from adain_kd_jax.training import summary as summary_lib

# Fields in which the members of one grid may differ: these (the loss
# weights and each member's own optimiser, its first phase's rate included)
# and every method's settings (methods.SETTING_FIELDS, which the terms
# declare).
# Everything else (the student, the teacher, the data, the batch size, the
# schedule, the logging and checkpoint periods) must be equal.
MEMBER_FIELDS = ('method', 'seed', 'compare_to', 'loss', 'learning_rate',
                 'init_learning_rate', 'momentum', 'weight_decay',
                 'skip_nonfinite', 'export', 'keep_checkpoints'
                 ) + methods.SETTING_FIELDS


def group_key(config: ml_collections.ConfigDict) -> str:
  """Members with the same key can train in one grid."""
  return grid_step.config_key(config, omit=MEMBER_FIELDS)


def roll_back(member: member_lib.Member, step: int, start_time: float) -> None:
  """Restores `member`'s checkpoint of `step` (an older one than it resumed
  from) and deletes the newer ones, which the grid recomputes."""
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      member.state)
  ckpt = member.run.checkpointer
  member.state, meta = ckpt.restore(abstract, at_most=step)
  restored = int(member.state.step)
  ckpt.delete_after(restored)
  # The older step's best and totals, this segment's resumes and changes.
  member.progress = dataclasses.replace(
      run_progress.RunProgress.from_json(meta),
      resumes=member.progress.resumes,
      config_changes=member.progress.config_changes)
  member.clock = member_lib.Clock(start_time, member.progress)
  if jax.process_index() == 0:
    print(f'{member.run.workdir}: rolled back to step {restored}, the '
          'newest step every member of its grid saved.', flush=True)


def align_steps(members: Sequence[member_lib.Member],
                start_time: float) -> None:
  """Rolls back the members that resumed from checkpoints to the newest step
  all of them saved (a grid killed between two members' saves resumes as
  one grid, bit for bit). Members that never saved start at step 0; with no
  step in common, members stay where they resumed (separate grids)."""
  saved = [m for m in members if m.run.checkpointer is not None
           and m.run.checkpointer.latest_step() is not None]
  if len({int(m.state.step) for m in saved}) < 2:
    return
  common = set.intersection(
      *(set(m.run.checkpointer.all_steps()) for m in saved))
  if common:
    step = max(common)
    for m in saved:
      if int(m.state.step) != step:
        roll_back(m, step, start_time)


def train_members(entries: Sequence[tuple[ml_collections.ConfigDict, str]],
                  start_time: float | None = None) -> dict[str, Any]:
  """Trains every unfinished (config, workdir), packed into grids.

  Returns:
    {workdir: summary (as loop.train_and_evaluate returns it),
    'skipped' (finished before), {'failed': message}, or {'claimed':
    message} (claims.py: another trainer holds it)}. A preempted grid
    ends the call: its members' values have 'preempted_at', later grids'
    members are left out.
  """
  start_time = time.time() if start_time is None else start_time
  results, groups = {}, {}
  for config, workdir in entries:
    if summary_lib.finished(workdir):
      results[workdir] = 'skipped'
    else:
      groups.setdefault(group_key(config), []).append((config, workdir))
  for group in groups.values():
    out = _train_group(group, start_time)
    results.update(out)
    if any(isinstance(v, dict) and 'preempted_at' in v for v in out.values()):
      break
  return results


def _train_group(group, start_time):
  """Builds the members of one group (sharing data per seed) and trains them
  as grids of equal start steps."""
  seeds = list(dict.fromkeys(int(c.seed) for c, _ in group))
  # Members sorted by seed: each seed's members are one slot.
  group = sorted(group, key=lambda e: seeds.index(int(e[0].seed)))
  datas, results, members = {}, {}, []
  with run_lib.mock_data(group[0][0]):
    try:
      for config, workdir in group:
        seed = int(config.seed)
        if seed not in datas:
          datas[seed] = loader.open_data(config, jax.process_index(),
                                         jax.process_count())
        try:
          run = run_lib.create_run(config, workdir, data=datas[seed])
        except claims.Claimed as e:  # Trained elsewhere: leave it alone.
          results[workdir] = {'claimed': str(e)}
          continue
        members.append(member_lib.Member(run, start_time))
      align_steps(members, start_time)
      by_step = {}
      for m in members:
        by_step.setdefault(int(m.state.step), []).append(m)
      for step in sorted(by_step):
        out = train_grid(by_step[step], start_time)
        results.update(out)
        if any('preempted_at' in v for v in out.values()
               if isinstance(v, dict)):
          break
    finally:
      for m in members:
        if m.run.checkpointer is not None:
          m.run.checkpointer.wait()
          m.run.checkpointer.close()
        m.run.release_claim()
      for data in datas.values():
        data.close()
  return results


def member_names(members) -> list[str]:
  """Each member's workdir relative to the members' common directory
  ('kd/seed0' in a sweep; 'kd/t2/seed100' beside other arms of a tuning),
  so that two settings of one method and seed stay apart."""
  dirs = [os.path.abspath(m.run.workdir) for m in members]
  if len(dirs) == 1:
    return [members[0].name]
  root = os.path.commonpath(dirs)
  return [os.path.relpath(d, root) for d in dirs]


class GridCalls:
  """A grid's jitted steps (`grid_step.GridSteps`) as `loop.train` calls
  them: per seed slot, the host's batches from `start_step`."""

  def __init__(self, members: Sequence[member_lib.Member],
               jitted: grid_step.GridSteps, start_step: int):
    self.members = list(members)
    self.jitted = jitted
    self.hosts = [r.data.train_batches(start_step) for r in jitted.slot_runs]

  def multi_step(self, members: Sequence[member_lib.Member], k: int
                 ) -> tuple[Any, ...]:
    """Trains every member k steps in one call; returns their metrics."""
    batches = tuple(
        steps.to_global(r.mesh,
                        jax.tree.map(lambda *x: np.stack(x),
                                     *[next(h) for _ in range(k)]),
                        P(None, 'data'))
        for r, h in zip(self.jitted.slot_runs, self.hosts))
    states, metrics = self.jitted.multi_step(
        tuple(m.state for m in members), self.jitted.teacher_vars, batches)
    for m, s in zip(members, states):
      m.state = s
    return metrics

  def evaluate(self, members: Sequence[member_lib.Member]
               ) -> list[dict[str, Any]]:
    """{split: result} for every member: one jitted call per eval batch and
    seed, for all that seed's members."""
    results = [dict() for _ in members]
    for slot, idx in enumerate(self.jitted.slots):
      run = members[idx[0]].run
      states = tuple(members[i].state for i in idx)
      for split, batches in run.data.eval_splits().items():
        sums = None
        for batch in batches():
          out = self.jitted.eval_steps[slot](
              states, self.jitted.teacher_vars[slot],
              steps.to_global(run.mesh, batch))
          sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
        for i, s in zip(idx, jax.device_get(sums)):
          results[i][split] = loop.eval_results(s)
    return results

  def grid_record(self, member: member_lib.Member) -> dict[str, Any]:
    """What a member's summary.json says about its grid."""
    members = self.members
    return {'members': member_names(members), 'size': len(members),
            'layout': self.jitted.layout,
            'shared_teacher': sum(
                m.run.config.seed == member.run.config.seed
                and m.run.distiller.teacher is not None for m in members) > 1
            and member.run.distiller.teacher is not None,
            'xla_flags': os.environ.get('XLA_FLAGS', '')}


def train_grid(members: Sequence[member_lib.Member], start_time: float
               ) -> dict[str, Any]:
  """Trains `members` (one group, all at the same step) to the end in one
  `loop.train`; returns {workdir: summary}."""
  start_step = int(members[0].state.step)
  jitted = grid_step.build_grid_steps([m.run for m in members])
  if jax.process_index() == 0:
    print(f'Grid of {len(members)} ({", ".join(member_names(members))}) '
          f'from step {start_step}.', flush=True)
  return loop.train(members, start_time,
                    GridCalls(members, jitted, start_step))
