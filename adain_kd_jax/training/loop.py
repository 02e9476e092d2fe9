"""Training and evaluation of a run (`run.create_run`): the loop, the summary.

`train_and_evaluate(config, workdir)` trains `config.model` with
`config.method` (see methods/), distilling from a frozen exported teacher
unless the method has no teacher term. The same code runs on one CPU, several
simulated CPU devices, a GPU or a TPU host: one `jax.jit` step over a `Mesh`
of all devices, the batch sharded over the 'data' axis, everything else
replicated. BatchNorm statistics are therefore over the global batch.
"""

import dataclasses
import os
import time
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import member as member_lib
from adain_kd_jax.training import metric_writer
from adain_kd_jax.training import preemption
from adain_kd_jax.training import progress as progress_lib
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import steps
from adain_kd_jax.training import summary as summary_lib

# One run as the loop trains it (member.py); a solo run is a grid of one.
Member = member_lib.Member


def train_and_evaluate(config, workdir: str,
                       resume_changes: tuple[str, ...] = ()) -> dict[str, Any]:
  """Trains and evaluates; returns the run summary (also WORKDIR/summary.json).

  The summary is a `summary.RunSummary`'s record (`to_json`): summary.json's
  keys and values, described there. WORKDIR/config.json holds the config
  (written at the start). A run stopped by SIGTERM or Ctrl-C returns
  `summary.stopped(...)` instead: {'model', 'method', 'preempted_at': step,
  'interrupted': whether it was Ctrl-C}. A non-finite loss (without
  config.skip_nonfinite) raises FloatingPointError naming the step.
  """
  start_time = time.time()
  done = summary_lib.finished_summary(config, workdir, resume_changes)
  if done is not None:
    return done
  with run_lib.mock_data(config):
    run = run_lib.create_run(config, workdir, tuple(resume_changes))
    try:
      out = train([Member(run, start_time)], start_time)
      out = out[run.workdir]
    finally:
      run.close()
  if 'failed' in out:
    raise FloatingPointError(out['failed'])
  return out


def evaluate(run: run_lib.Run, state) -> dict[str, dict[str, Any]]:
  """{split: {'accuracy', 'loss', 'count'}} of `state` on every eval split."""
  results = {}
  for split, batches in run.data.eval_splits().items():
    sums = None
    for batch in batches():
      out = run.eval_step(state, run.teacher_vars,
                          steps.to_global(run.mesh, batch))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    results[split] = eval_results(jax.device_get(sums))
  return results


def eval_results(sums) -> dict[str, Any]:
  """{'accuracy', 'loss', 'count'} from an eval step's summed outputs."""
  return {'accuracy': float(sums['correct'] / sums['count']),
          'loss': float(sums['loss'] / sums['count']),
          'count': int(sums['count'])}


class SoloCalls:
  """A run's own jitted steps (`run.multi_step`, `run.eval_step`): the next
  k steps' batches, stacked and global, with images from the host or
  gathered on the devices (`config.device_data`)."""

  def __init__(self, member: Member):
    run = member.run
    self.run = run
    self.device_data = None
    if run.config.device_data:
      # Every device holds the training set (CIFAR-100 is 150 MB as uint8);
      # each step then gathers its batch on the device, no host transfer.
      self.device_data = steps.to_global(
          run.mesh, {'image': run.data.train_images,
                     'label': run.data.train_labels.astype(np.int32)},
          P())
    self.host = run.data.train_batches(
        int(member.state.step), indices_only=self.device_data is not None)

  def multi_step(self, members: Sequence[Member], k: int
                 ) -> tuple[Any]:
    """Trains the member k steps; returns its metrics (stacked over k)."""
    chunk = [next(self.host) for _ in range(k)]
    batches = steps.to_global(
        self.run.mesh, jax.tree.map(lambda *x: np.stack(x), *chunk),
        P(None, 'data'))
    m, = members
    m.state, metrics = self.run.multi_step(
        m.state, self.run.teacher_vars, self.device_data, batches)
    return (metrics,)

  def evaluate(self, members: Sequence[Member]
               ) -> list[dict[str, Any]]:
    return [evaluate(self.run, m.state) for m in members]

  def grid_record(self, member: Member) -> dict[str, Any] | None:
    del member  # A solo run has no grid.
    return None


def _check_finite(run, first, metrics, latest_step):
  """Raises FloatingPointError naming the step and the non-finite terms."""
  finite = np.asarray(jax.device_get(metrics['finite']))
  if run.config.skip_nonfinite or finite.all():
    return
  i = int(np.argmin(finite))
  values = jax.device_get(metrics)
  bad = [k for k, v in values.items()
         if k != 'finite' and not np.isfinite(v[i])]
  raise FloatingPointError(
      f'Non-finite {", ".join(bad)} at step {first + i} (method '
      f'{run.config.method}). The last good checkpoint (step {latest_step}) '
      f'in {run.workdir} is intact. Lower config.learning_rate or the loss '
      'weights, check the teacher, or set --config.skip_nonfinite=True to '
      'skip such steps.')


def _announce(member: Member, start_step: int) -> None:
  """Says that the data are mock data, or that the run resumes."""
  run, config = member.run, member.run.config
  if config.get('mock_data', 0):
    print(f'Mock data: {config.mock_data} random examples per split '
          '(tfds.testing.mock_data)'
          + (f', a random {config.teacher} teacher' if run.random_teacher
             else '') + '; the accuracies mean nothing.', flush=True)
  if member.progress.resumes:
    print(f'Resuming {run.workdir} at step {start_step}.', flush=True)


def _start(members: Sequence[Member], start_step: int) -> None:
  """Announces every member; opens its metric writer at `start_step`."""
  is_main = jax.process_index() == 0
  for m in members:
    config = m.run.config
    if is_main:
      _announce(m, start_step)
    m.writer = metric_writer.MetricWriter(m.run.workdir, start_step,
                                          enabled=is_main)
    logging.info('Training %s with %s for %d steps (%d per epoch) on %d '
                 'device(s), from step %d.', config.model, config.method,
                 m.run.total_steps, m.run.steps_per_epoch,
                 jax.device_count(), start_step)


def _settle(members: Sequence[Member], done) -> None:
  """Checks a dispatched call's metrics once it is done; logs the last.

  Called one call late, so that the host never waits for the device except
  to read the finite flags. A member whose metrics are not finite fails
  here, before its state can be checkpointed; the others go on. `done`:
  (first step, metrics per member, whether to log).
  """
  first, metrics, log = done
  for m, mm in zip(members, metrics):
    if m.failed:
      continue
    try:
      _check_finite(m.run, first, mm, m.run.checkpointer.latest_step())
    except FloatingPointError as e:
      m.failed = str(e)
      if len(members) > 1:
        print(f'{m.name}: {e}', flush=True)
      continue
    if log:
      values = {k: float(v[-1]) for k, v in jax.device_get(mm).items()
                if k != 'finite'}
      step = first + len(mm['finite']) - 1
      m.writer.write(dict(step=step, split='train',
                          epoch=step / m.run.steps_per_epoch,
                          images_per_sec=m.clock.images_per_sec(), **values))


def _evaluate_and_log(members: Sequence[Member], calls,
                      step: int) -> None:
  """Evaluates every member at `step`, logs it and keeps its best step in
  its progress record (chosen on the validation split where there is one, else on
  test)."""
  eval_start = time.time()
  evals = calls.evaluate(members)
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
    if acc > m.progress.best_accuracy:
      m.progress = dataclasses.replace(m.progress, best_accuracy=acc,
                                       best_step=step)


def _save(members: Sequence[Member], step: int) -> None:
  """Checkpoints every member that has not failed; flushes its metrics."""
  for m in members:
    if not m.failed:
      m.run.checkpointer.save(step, m.state, dataclasses.replace(
          m.progress, **m.clock.totals()).to_json())
      m.writer.flush()


def _progress_bar(members, initial, compiling=False):
  # Until the first call has run, its time is compilation: no ETA.
  run = members[0].run
  desc = (f'{run.config.method}:{run.config.model}' if len(members) == 1
          else f'grid of {len(members)}')
  return progress_lib.progress(
      total=run.total_steps, initial=initial, desc=desc,
      every=run.config.log_every_steps, disable=jax.process_index() != 0,
      compiling=compiling)


def train(members: Sequence[Member],
          start_time: float | None = None, calls=None) -> dict[str, Any]:
  """Trains `members` (all at the same step, on one schedule) to the end;
  returns {workdir: summary, or {'failed': message}, or the stopped
  summary}. A solo run is
  `train([Member(run, start_time)])`.

  `calls` runs the members' jitted steps: `multi_step(members, k)` (updates
  their states, returns their metrics), `evaluate(members)` and
  `grid_record(member)`; `SoloCalls` (one member's own steps) by default,
  a grid's for several (grid.py). Checkpoints at every log/checkpoint/eval
  boundary, stops cleanly on SIGTERM or Ctrl-C, writes each member's
  metrics.jsonl and TensorBoard scalars, and at the end its summary.json
  (and export). A member whose loss turns non-finite (without
  config.skip_nonfinite) stops being checkpointed and logged; the others go
  on.
  """
  start_time = time.time() if start_time is None else start_time
  calls = SoloCalls(members[0]) if calls is None else calls
  first_run = members[0].run
  config, total_steps = first_run.config, first_run.total_steps
  start_step = int(members[0].state.step)
  _start(members, start_step)
  boundaries = (config.log_every_steps, config.checkpoint_every_steps,
                first_run.eval_every)
  progress = _progress_bar(members, start_step, compiling=True)
  watcher = preemption.PreemptionWatcher(sync_every=config.log_every_steps)
  pending, preempted_at, step = None, None, start_step
  try:
    while step < total_steps:
      to_next = min(b - step % b for b in boundaries)
      k = min(config.steps_per_call, to_next, total_steps - step)
      metrics = calls.multi_step(members, k)
      first, step = step + 1, step + k
      if members[0].clock.train_start is None:
        jax.block_until_ready(metrics)
        train_start = time.time()
        for m in members:
          m.clock.train_start = train_start
        progress.close()
        progress = _progress_bar(members, step)
      else:
        for m in members:
          m.clock.images += k * m.run.config.batch_size
        progress.update(k)
      if pending is not None:
        _settle(members, pending)
      pending = (first, metrics, step % config.log_every_steps == 0
                 or step == total_steps)
      stop = watcher.should_stop(step)
      is_eval = step % first_run.eval_every == 0 or step == total_steps
      if is_eval or stop or step % config.checkpoint_every_steps == 0:
        _settle(members, pending)  # Never checkpoint a non-finite state.
        pending = None
        if all(m.failed for m in members):
          break
        if is_eval:
          _evaluate_and_log(members, calls, step)
          if len(members) == 1:
            progress.set_postfix(
                test_acc=f'{members[0].last_eval["test"]["accuracy"]:.4f}')
        _save(members, step)
      if all(m.failed for m in members):
        break
      if stop and step < total_steps:
        preempted_at = step
        break
  finally:
    progress.close()
    watcher.close()
    for m in members:
      m.writer.close()
  if preempted_at is not None:
    return _stopped_early(members, preempted_at, watcher.interrupted)
  return _finish(members, calls, start_time)


def _stopped_early(members: Sequence[Member], step: int,
                   interrupted: bool) -> dict[str, Any]:
  """Says where the members saved; {workdir: its stopped summary}."""
  if jax.process_index() == 0:
    why = 'Interrupted (Ctrl-C)' if interrupted else 'Preempted'
    where = (f'in {members[0].run.workdir}' if len(members) == 1
             else f'of the grid of {len(members)}')
    print(f'{why}: saved step {step} {where}; run the same command again to '
          'resume.', flush=True)
  return {m.run.workdir: summary_lib.stopped(m.run.config, step, interrupted)
          for m in members}


def _finish(members: Sequence[Member], calls,
            start_time: float) -> dict[str, Any]:
  """{workdir: the member's summary record, or {'failed': message}}."""
  missing = [m for m in members if m.last_eval is None and not m.failed]
  if missing:  # Resumed already finished members.
    for m, results in zip(members, calls.evaluate(members)):
      if m in missing:
        m.last_eval = results
  return {m.run.workdir: {'failed': m.failed} if m.failed
          else _summarise(m, start_time, calls.grid_record(m))
          for m in members}


def _summarise(member: Member, start_time: float,
               grid: dict[str, Any] | None) -> dict[str, Any]:
  """The summary, the export and summary.json; returns the summary's record
  (`summary.RunSummary.to_json`). `grid`: a grid member's grid record."""
  run, state, progress, last_eval = (member.run, member.state,
                                     member.progress,
                                 member.last_eval)
  config = run.config
  wall = time.time() - start_time
  total = member.clock.totals()
  summary = summary_lib.RunSummary(
      model=config.model, method=config.method,
      teacher=config.teacher if run.distiller.teacher is not None else '',
      dataset=config.dataset, seed=config.seed, steps=run.total_steps,
      epochs=run.total_steps / run.steps_per_epoch,
      test_accuracy=last_eval['test']['accuracy'],
      best_accuracy=progress.best_accuracy, best_step=progress.best_step,
      best_on='val' if 'val' in last_eval else 'test',
      teacher_test_accuracy=run.teacher_meta.get('test_accuracy'),
      skipped_steps=int(state.skipped),
      images_per_sec=(
          total['train_images_total'] / total['train_seconds_total']
          if total['train_images_total'] else None),
      wall_seconds=wall,
      wall_seconds_total=total['wall_seconds_total'],
      resumes=progress.resumes,
      config_changes=list(progress.config_changes),
      val_accuracy=(last_eval['val']['accuracy'] if 'val' in last_eval
                    else None),
      grid=grid, predicted_by=run.distiller.predicted_by)
  if config.export:
    summary.export = _export(run, state, summary, last_eval, wall)
  if jax.process_index() == 0:
    summary_lib.write(run.workdir, summary)
    segments = (f'{summary.wall_seconds_total:.0f} s in all over '
                f'{summary.resumes + 1} segments'
                if summary.resumes else f'{wall:.0f} s')
    print(f'[{config.method}] {config.model} on {config.dataset}: test '
          f'accuracy {summary.test_accuracy:.4f} after '
          f'{run.total_steps} steps ({segments}); best '
          f'{summary.best_accuracy:.4f} at step {summary.best_step}'
          + (f' (predicted by {summary.predicted_by})'
             if summary.predicted_by else '') + '.', flush=True)
  return summary.to_json()


def _export(run, state, summary: summary_lib.RunSummary, last_eval,
            wall) -> str:
  """Writes WORKDIR/export (the student as a teacher); returns its path."""
  config = run.config
  export_dir = os.path.join(run.workdir, 'export')
  variables = {'params': state.params['student'],
               'batch_stats': state.batch_stats['student']}
  checkpoints.save_teacher(export_dir, variables, {
      'model': config.model, 'num_classes': run.dataset_info.num_classes,
      'dataset': config.dataset, 'image_shape': list(run.image_shape),
      'test_accuracy': summary.test_accuracy,
      'test_examples': last_eval['test']['count'],
      'trained_with': {k: v for k, v in config.to_dict().items()
                       if not isinstance(v, dict)},
      'wall_seconds': wall}, step=run.total_steps)
  return export_dir
