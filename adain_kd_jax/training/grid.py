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
and, in the step, the teacher's forward (grid_step.py). A grid starts from
the step its members restored; members restored at different steps (a run
killed between two members' saves) train as separate grids, one after the
other.

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

import json
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import tqdm

from adain_kd_jax.data import loader
from adain_kd_jax.training import grid_step
from adain_kd_jax.training import loop
from adain_kd_jax.training import metric_writer
from adain_kd_jax.training import preemption
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import run_record

# Fields in which the members of one grid may differ. Everything else (the
# student, the teacher, the data, the batch size, the schedule, the logging
# and checkpoint periods) must be equal.
MEMBER_FIELDS = ('method', 'seed', 'compare_to', 'loss', 'points',
                 'point_weights', 'connector_relu', 'dkd', 'crd',
                 'learning_rate', 'momentum', 'weight_decay',
                 'skip_nonfinite', 'export', 'keep_checkpoints')
LAYOUT = 'loop'  # Members as a Python loop in one jitted program.


def group_key(config: ml_collections.ConfigDict) -> str:
  """Members with the same key can train in one grid."""
  fields = config.to_dict()
  for name in MEMBER_FIELDS:
    fields.pop(name, None)
  return json.dumps(fields, sort_keys=True, default=str)


def _finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'summary.json'))


class _Member:
  """One member's run and what its loop keeps (state, meta, writer, clock)."""

  def __init__(self, run, start_time):
    self.run = run
    self.state = run.state
    self.meta = dict(run.meta)
    self.clock = loop._Clock(  # pylint: disable=protected-access
        start_time, {k: self.meta.get(k, 0) for k in loop._TOTALS})  # pylint: disable=protected-access
    self.writer = None
    self.failed = None  # The non-finite message, once it happened.
    self.last_eval = None

  @property
  def name(self) -> str:
    return f'{self.run.config.method}/seed{self.run.config.seed}'


def train_members(entries: Sequence[tuple[ml_collections.ConfigDict, str]],
                  start_time: float | None = None) -> dict[str, Any]:
  """Trains every unfinished (config, workdir), packed into grids.

  Returns:
    {workdir: summary (as loop.train_and_evaluate returns it),
    'skipped' (finished before), or {'failed': message}}. A preempted grid
    ends the call: its members' values have 'preempted_at', later grids'
    members are left out.
  """
  start_time = time.time() if start_time is None else start_time
  results, groups = {}, {}
  for config, workdir in entries:
    if _finished(workdir):
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
        members.append(_Member(
            run_lib.create_run(config, workdir, data=datas[seed]),
            start_time))
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


def _grid_record(members, member):
  """What a member's summary.json says about its grid."""
  return {'members': member_names(members), 'size': len(members),
          'layout': LAYOUT,
          'shared_teacher': sum(
              m.run.config.seed == member.run.config.seed
              and m.run.distiller.teacher is not None for m in members) > 1
          and member.run.distiller.teacher is not None,
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def train_grid(members: Sequence[_Member], start_time: float
               ) -> dict[str, Any]:
  """Trains `members` (one group, all at the same step) to the end, as
  `loop.train` trains one run; returns {workdir: summary}."""
  # pylint: disable=protected-access
  first = members[0].run
  config, is_main = first.config, jax.process_index() == 0
  start_step = int(members[0].state.step)
  seeds = list(dict.fromkeys(int(m.run.config.seed) for m in members))
  slots = [[i for i, m in enumerate(members)
            if int(m.run.config.seed) == seed] for seed in seeds]
  slot_runs = [members[idx[0]].run for idx in slots]
  preps = [run_lib.make_prep(r.config, r.info) for r in slot_runs]
  spec = [grid_step.Member(
      distiller=m.run.distiller, tx=m.run.tx, schedule=m.run.schedule,
      skip_nonfinite=bool(m.run.config.skip_nonfinite),
      slot=seeds.index(int(m.run.config.seed))) for m in members]
  multi_step = grid_step.jit_grid_multi_step(first.mesh, spec, preps)
  eval_steps = [grid_step.jit_grid_eval_step(
      first.mesh, [members[i].run.distiller for i in idx], preps[s])
                for s, idx in enumerate(slots)]
  teacher_vars = tuple(next(
      (members[i].run.teacher_vars for i in idx
       if members[i].run.teacher_vars is not None), None) for idx in slots)
  hosts = [r.data.train_batches(start_step) for r in slot_runs]
  for m in members:
    if is_main:
      loop._announce(m.run, start_step, m.meta)
    m.writer = metric_writer.MetricWriter(m.run.workdir, start_step,
                                          enabled=is_main)
  if is_main:
    print(f'Grid of {len(members)} ({", ".join(member_names(members))}) '
          f'from step {start_step}.', flush=True)
  boundaries = (config.log_every_steps, config.checkpoint_every_steps,
                first.eval_every)
  total_steps = first.total_steps
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                       disable=not is_main, mininterval=2.0,
                       desc=f'grid of {len(members)}')
  watcher = preemption.PreemptionWatcher(sync_every=config.log_every_steps)
  pending, preempted_at, step = None, None, start_step
  train_start = None

  def settle(done):
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

  try:
    while step < total_steps:
      to_next = min(b - step % b for b in boundaries)
      k = min(config.steps_per_call, to_next, total_steps - step)
      batches = tuple(_stacked(r, [next(h) for _ in range(k)])
                      for r, h in zip(slot_runs, hosts))
      states, metrics = multi_step(tuple(m.state for m in members),
                                   teacher_vars, batches)
      for m, s in zip(members, states):
        m.state = s
      first_step, step = step + 1, step + k
      if train_start is None:
        jax.block_until_ready(metrics)
        train_start = time.time()
        for m in members:
          m.clock.train_start = train_start
      else:
        for m in members:
          m.clock.images += k * config.batch_size
      progress.update(k)
      if pending is not None:
        settle(pending)
      pending = (first_step, metrics, step % config.log_every_steps == 0
                 or step == total_steps)
      stop = watcher.should_stop(step)
      is_eval = step % first.eval_every == 0 or step == total_steps
      if is_eval or stop or step % config.checkpoint_every_steps == 0:
        settle(pending)
        pending = None
        if is_eval:
          eval_start = time.time()
          evals = _evaluate(members, slots, eval_steps)
          seconds = time.time() - eval_start
          for m, results in zip(members, evals):
            m.clock.eval_seconds += seconds
            if m.failed:
              continue
            m.last_eval = results
            for split, result in results.items():
              m.writer.write(dict(step=step, split=split,
                                  epoch=step / m.run.steps_per_epoch,
                                  **result))
            acc = results['val' if 'val' in results else 'test']['accuracy']
            if acc > m.meta['best_accuracy']:
              m.meta = dict(m.meta, best_accuracy=acc, best_step=step)
        for m in members:
          if not m.failed:
            m.run.checkpointer.save(step, m.state,
                                    dict(m.meta, **m.clock.totals()))
            m.writer.flush()
      if stop and step < total_steps:
        preempted_at = step
        break
  finally:
    progress.close()
    watcher.close()
    for m in members:
      m.writer.close()

  out = {}
  if preempted_at is not None:
    if is_main:
      why = 'Interrupted (Ctrl-C)' if watcher.interrupted else 'Preempted'
      print(f'{why}: saved step {preempted_at} of the grid of '
            f'{len(members)}; run the same command again to resume.',
            flush=True)
    for m in members:
      out[m.run.workdir] = {'model': m.run.config.model,
                            'method': m.run.config.method,
                            'preempted_at': preempted_at,
                            'interrupted': watcher.interrupted}
    return out
  missing = [m for m in members if m.last_eval is None and not m.failed]
  if missing:  # Resumed already finished members.
    for m, results in zip(members, _evaluate(members, slots, eval_steps)):
      if m in missing:
        m.last_eval = results
  for m in members:
    if m.failed:
      out[m.run.workdir] = {'failed': m.failed}
      continue
    summary = loop._finish(m.run, m.state, m.meta, m.last_eval, m.clock,
                                start_time)
    summary['grid'] = _grid_record(members, m)
    if is_main:
      run_record.write_json(os.path.join(m.run.workdir, 'summary.json'),
                            summary)
    out[m.run.workdir] = summary
  return out


