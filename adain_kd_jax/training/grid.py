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
the first step) and, for some methods, bit for bit (on the CPU: none,
fitnet and stat_l2; benchmarks/grid_identity.py). The same grid rerun, or
stopped (SIGTERM, Ctrl-C) and resumed, is bit-identical.

A member whose loss turns non-finite (without config.skip_nonfinite) stops
being checkpointed and logged, with the solo run's message; the others go
on, and `train_members` reports it as {'failed': message}.
"""

import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from adain_kd_jax.data import loader
from adain_kd_jax.training import claims
from adain_kd_jax.training import grid_step
from adain_kd_jax.training import loop
from adain_kd_jax.training import metric_writer
from adain_kd_jax.training import preemption
from adain_kd_jax.training import progress as progress_lib
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import summary as summary_lib

# Fields in which the members of one grid may differ. Everything else (the
# student, the teacher, the data, the batch size, the schedule, the logging
# and checkpoint periods) must be equal.
MEMBER_FIELDS = ('method', 'seed', 'compare_to', 'loss', 'points',
                 'point_weights', 'connector_relu', 'dkd', 'crd',
                 'learning_rate', 'momentum', 'weight_decay',
                 'skip_nonfinite', 'export', 'keep_checkpoints')


def group_key(config: ml_collections.ConfigDict) -> str:
  """Members with the same key can train in one grid."""
  return grid_step.config_key(config, omit=MEMBER_FIELDS)


class _Member:
  """One member's run and what its loop keeps (state, meta, writer, clock)."""

  def __init__(self, run: run_lib.Run, start_time: float):
    # pylint: disable=protected-access
    self.run = run
    self.state = run.state
    self.meta = dict(run.meta)
    self.clock = self._clock(start_time)
    self.writer: metric_writer.MetricWriter | None = None
    self.failed: str | None = None  # The non-finite message, once it happened.
    self.last_eval: dict[str, dict[str, Any]] | None = None  # By split.

  def _clock(self, start_time: float) -> 'loop._Clock':
    # pylint: disable=protected-access
    return loop._Clock(start_time,
                       {k: self.meta.get(k, 0) for k in loop._TOTALS})

  @property
  def name(self) -> str:
    return f'{self.run.config.method}/seed{self.run.config.seed}'

  def roll_back(self, step: int, start_time: float) -> None:
    """Restores this member's checkpoint of `step` (an older one than it
    resumed from) and deletes the newer ones, which the grid recomputes."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        self.state)
    ckpt = self.run.checkpointer
    self.state, meta = ckpt.restore(abstract, at_most=step)
    restored = int(self.state.step)
    ckpt.delete_after(restored)
    kept = {k: self.meta[k] for k in ('resumes', 'config_changes')
            if k in self.meta}
    self.meta = dict(meta, **kept)
    self.clock = self._clock(start_time)
    if jax.process_index() == 0:
      print(f'{self.run.workdir}: rolled back to step {restored}, the '
            'newest step every member of its grid saved.', flush=True)


def align_steps(members: Sequence[_Member], start_time: float) -> None:
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
        m.roll_back(step, start_time)


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
        members.append(_Member(run, start_time))
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


def _stacked(run, chunk):
  return run.to_global(jax.tree.map(lambda *x: np.stack(x), *chunk),
                       P(None, 'data'))


def _evaluate(members, slots, eval_steps):
  """{split: result} for every member: one jitted call per eval batch and
  seed, for all that seed's members."""
  results = [dict() for _ in members]
  for slot, idx in enumerate(slots):
    run = members[idx[0]].run
    states = tuple(members[i].state for i in idx)
    for split, batches in run.data.eval_splits().items():
      sums = None
      for batch in batches():
        out = eval_steps[slot](states, run.to_global(batch))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
      for i, s in zip(idx, jax.device_get(sums)):
        results[i][split] = {'accuracy': float(s['correct'] / s['count']),
                             'loss': float(s['loss'] / s['count']),
                             'count': int(s['count'])}
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


def _grid_record(members, member, layout):
  """What a member's summary.json says about its grid."""
  return {'members': member_names(members), 'size': len(members),
          'layout': layout,
          'shared_teacher': sum(
              m.run.config.seed == member.run.config.seed
              and m.run.distiller.teacher is not None for m in members) > 1
          and member.run.distiller.teacher is not None,
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def _open_writers(members: Sequence[_Member], start_step: int) -> None:
  """Announces every member (mock data, resume) and the grid; opens each
  member's metric writer at `start_step`."""
  # pylint: disable=protected-access
  is_main = jax.process_index() == 0
  for m in members:
    if is_main:
      loop._announce(m.run, start_step, m.meta)
    m.writer = metric_writer.MetricWriter(m.run.workdir, start_step,
                                          enabled=is_main)
  if is_main:
    print(f'Grid of {len(members)} ({", ".join(member_names(members))}) '
          f'from step {start_step}.', flush=True)


def _train_call(members: Sequence[_Member], jitted: grid_step.GridSteps,
                hosts: Sequence[Any], k: int) -> tuple[Any, ...]:
  """Runs k steps of every member in one call; returns their metrics.

  The first call's time is compilation: each member's training clock starts
  when it is done.
  """
  batches = tuple(_stacked(r, [next(h) for _ in range(k)])
                  for r, h in zip(jitted.slot_runs, hosts))
  states, metrics = jitted.multi_step(tuple(m.state for m in members),
                                      jitted.teacher_vars, batches)
  for m, s in zip(members, states):
    m.state = s
  if members[0].clock.train_start is None:
    jax.block_until_ready(metrics)
    train_start = time.time()
    for m in members:
      m.clock.train_start = train_start
  else:
    for m in members:
      m.clock.images += k * m.run.config.batch_size
  return metrics


def _settle(members: Sequence[_Member], done) -> None:
  """`loop._settle` for every member that has not failed: a member whose
  metrics are not finite fails (and says so); the others log the last step
  when asked. `done`: (first step, metrics per member, whether to log)."""
  # pylint: disable=protected-access
  first_step, metrics, log = done
  for m, mm in zip(members, metrics):
    if m.failed:
      continue
    try:
      loop._check_finite(m.run, first_step, mm,
                         m.run.checkpointer.latest_step())
    except FloatingPointError as e:
      m.failed = str(e)
      print(f'{m.name}: {e}', flush=True)
      continue
    if log:
      values = {k: float(v[-1]) for k, v in jax.device_get(mm).items()
                if k != 'finite'}
      last = first_step + len(mm['finite']) - 1
      m.writer.write(dict(step=last, split='train',
                          epoch=last / m.run.steps_per_epoch,
                          images_per_sec=m.clock.images_per_sec(),
                          **values))


def _evaluate_and_log(members: Sequence[_Member], jitted: grid_step.GridSteps,
                      step: int) -> None:
  """Evaluates every member at `step`, logs it and keeps its best step in
  its meta (chosen on val where there is one, else on test)."""
  eval_start = time.time()
  evals = _evaluate(members, jitted.slots, jitted.eval_steps)
  seconds = time.time() - eval_start
  for m, results in zip(members, evals):
    m.clock.eval_seconds += seconds
    if m.failed:
      continue
    m.last_eval = results
    for split, result in results.items():
      m.writer.write(dict(step=step, split=split,
                          epoch=step / m.run.steps_per_epoch, **result))
    acc = results['val' if 'val' in results else 'test']['accuracy']
    if acc > m.meta['best_accuracy']:
      m.meta = dict(m.meta, best_accuracy=acc, best_step=step)


def _save(members: Sequence[_Member], step: int) -> None:
  """Checkpoints every member that has not failed; flushes its metrics."""
  for m in members:
    if not m.failed:
      m.run.checkpointer.save(step, m.state,
                              dict(m.meta, **m.clock.totals()))
      m.writer.flush()


def _train_steps(members: Sequence[_Member], jitted: grid_step.GridSteps,
                 hosts: Sequence[Any], start_step: int
                 ) -> tuple[int | None, bool]:
  """Trains `members` from `start_step` to the end, as `loop.train` trains
  one run: checkpoints at every log/checkpoint/eval boundary, evaluates at
  the eval ones, stops cleanly on SIGTERM or Ctrl-C.

  Returns:
    (the step it stopped at, or None if it trained to the end; whether the
    stop was Ctrl-C).
  """
  first = members[0].run
  config, total_steps = first.config, first.total_steps
  boundaries = (config.log_every_steps, config.checkpoint_every_steps,
                first.eval_every)
  # A bar on a terminal, lines in a log file (as a solo run's).
  progress = progress_lib.progress(
      total=total_steps, initial=start_step, desc=f'grid of {len(members)}',
      every=config.log_every_steps, disable=jax.process_index() != 0)
  watcher = preemption.PreemptionWatcher(sync_every=config.log_every_steps)
  pending, preempted_at, step = None, None, start_step
  try:
    while step < total_steps:
      to_next = min(b - step % b for b in boundaries)
      k = min(config.steps_per_call, to_next, total_steps - step)
      metrics = _train_call(members, jitted, hosts, k)
      first_step, step = step + 1, step + k
      progress.update(k)
      if pending is not None:
        _settle(members, pending)
      pending = (first_step, metrics, step % config.log_every_steps == 0
                 or step == total_steps)
      stop = watcher.should_stop(step)
      is_eval = step % first.eval_every == 0 or step == total_steps
      if is_eval or stop or step % config.checkpoint_every_steps == 0:
        _settle(members, pending)  # Never checkpoint a non-finite state.
        pending = None
        if is_eval:
          _evaluate_and_log(members, jitted, step)
        _save(members, step)
      if stop and step < total_steps:
        preempted_at = step
        break
  finally:
    progress.close()
    watcher.close()
    for m in members:
      m.writer.close()
  return preempted_at, watcher.interrupted


def _stopped_early(members: Sequence[_Member], step: int,
                   interrupted: bool) -> dict[str, Any]:
  """Says where a stopped grid saved; {workdir: its stopped summary}."""
  if jax.process_index() == 0:
    why = 'Interrupted (Ctrl-C)' if interrupted else 'Preempted'
    print(f'{why}: saved step {step} of the grid of '
          f'{len(members)}; run the same command again to resume.',
          flush=True)
  return {m.run.workdir: summary_lib.stopped(m.run.config, step, interrupted)
          for m in members}


def _finish(members: Sequence[_Member], jitted: grid_step.GridSteps,
            start_time: float) -> dict[str, Any]:
  """Every member's summary, export and summary.json (with its grid
  record), or {'failed': message}; {workdir: that}."""
  # pylint: disable=protected-access
  missing = [m for m in members if m.last_eval is None and not m.failed]
  if missing:  # Resumed already finished members.
    for m, results in zip(members, _evaluate(members, jitted.slots,
                                             jitted.eval_steps)):
      if m in missing:
        m.last_eval = results
  out = {}
  for m in members:
    if m.failed:
      out[m.run.workdir] = {'failed': m.failed}
      continue
    out[m.run.workdir] = loop._finish(
        m.run, m.state, m.meta, m.last_eval, m.clock, start_time,
        grid=_grid_record(members, m, jitted.layout))
  return out


def train_grid(members: Sequence[_Member], start_time: float
               ) -> dict[str, Any]:
  """Trains `members` (one group, all at the same step) to the end, as
  `loop.train` trains one run; returns {workdir: summary}."""
  start_step = int(members[0].state.step)
  jitted = grid_step.build_grid_steps([m.run for m in members])
  hosts = [r.data.train_batches(start_step) for r in jitted.slot_runs]
  _open_writers(members, start_step)
  preempted_at, interrupted = _train_steps(members, jitted, hosts,
                                           start_step)
  if preempted_at is not None:
    return _stopped_early(members, preempted_at, interrupted)
  return _finish(members, jitted, start_time)
