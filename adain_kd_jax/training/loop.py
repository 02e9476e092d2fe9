"""Training and evaluation of a run (`run.create_run`): the loop, the summary.

`train_and_evaluate(config, workdir)` trains `config.model` with
`config.method` (see methods/), distilling from a frozen exported teacher
unless the method has no teacher term. The same code runs on one CPU, several
simulated CPU devices, a GPU or a TPU host: one `jax.jit` step over a `Mesh`
of all devices, the batch sharded over the 'data' axis, everything else
replicated. BatchNorm statistics are therefore over the global batch.
"""

import functools
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import metric_writer
from adain_kd_jax.training import preemption
from adain_kd_jax.training import progress as progress_lib
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import summary as summary_lib

# Kept in the checkpoints' meta, so that a resumed run adds up all its
# segments: wall time, training time (compilation and evaluation excluded)
# and the images trained on in that time.
_TOTALS = ('wall_seconds_total', 'train_seconds_total', 'train_images_total')


def train_and_evaluate(config, workdir: str,
                       resume_changes: tuple[str, ...] = ()) -> dict[str, Any]:
  """Trains and evaluates; returns the run summary (also WORKDIR/summary.json).

  The summary is a `summary.RunSummary`'s record (`to_json`): summary.json's
  keys and values, described there. WORKDIR/config.json holds the config
  (written at the start). A run stopped by SIGTERM or Ctrl-C returns
  `summary.stopped(...)` instead: {'model', 'method', 'preempted_at': step,
  'interrupted': whether it was Ctrl-C}.
  """
  start_time = time.time()
  with run_lib.mock_data(config):
    run = run_lib.create_run(config, workdir, tuple(resume_changes))
    try:
      return train(run, run.state, run.meta, start_time=start_time)
    finally:
      run.close()


def evaluate(run: run_lib.Run, state) -> dict[str, dict[str, Any]]:
  """{split: {'accuracy', 'loss', 'count'}} of `state` on every eval split."""
  results = {}
  for split, batches in run.data.eval_splits().items():
    sums = None
    for batch in batches():
      out = run.eval_step(state, run.to_global(batch))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    results[split] = {'accuracy': float(sums['correct'] / sums['count']),
                      'loss': float(sums['loss'] / sums['count']),
                      'count': int(sums['count'])}
  return results


class _Clock:
  """Wall and training time of this segment, and of all segments so far.

  Training time counts from the end of the first call (compilation
  excluded) and leaves evaluation out.
  """

  def __init__(self, start_time: float, earlier: dict[str, float]):
    self.start_time = start_time
    self.earlier = earlier
    self.images = 0
    self.train_start = None
    self.eval_seconds = 0.0

  def train_seconds(self) -> float:
    if self.train_start is None:
      return 0.0
    return time.time() - self.train_start - self.eval_seconds

  def images_per_sec(self) -> float | None:
    if not self.images:
      return None
    return self.images / max(self.train_seconds(), 1e-9)

  def totals(self) -> dict[str, float]:
    """`_TOTALS` over this run's segments so far (see summary.json)."""
    e = self.earlier
    return {'wall_seconds_total':
                e['wall_seconds_total'] + time.time() - self.start_time,
            'train_seconds_total':
                e['train_seconds_total'] + self.train_seconds(),
            'train_images_total': e['train_images_total'] + self.images}


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


def _progress_bar(run, initial, compiling=False):
  # Until the first call has run, its time is compilation: no ETA.
  return progress_lib.progress(
      total=run.total_steps, initial=initial,
      desc=f'{run.config.method}:{run.config.model}',
      every=run.config.log_every_steps, disable=jax.process_index() != 0,
      compiling=compiling)


class _Batches:
  """The next k steps' batches, stacked and global; images from the host or
  gathered on the devices (`config.device_data`)."""

  def __init__(self, run, start_step):
    self.run = run
    self.device_data = None
    if run.config.device_data:
      # Every device holds the training set (CIFAR-100 is 150 MB as uint8);
      # each step then gathers its batch on the device, no host transfer.
      self.device_data = run.to_global(
          {'image': run.data.train_images,
           'label': run.data.train_labels.astype(np.int32)}, P())
    self.host = run.data.train_batches(
        start_step, indices_only=self.device_data is not None)

  def next(self, k):
    chunk = [next(self.host) for _ in range(k)]
    return self.run.to_global(jax.tree.map(lambda *x: np.stack(x), *chunk),
                              P(None, 'data'))


def _announce(run, start_step, meta):
  """Says that the data are mock data, or that the run resumes."""
  config = run.config
  if config.get('mock_data', 0):
    print(f'Mock data: {config.mock_data} random examples per split '
          '(tfds.testing.mock_data)'
          + (f', a random {config.teacher} teacher' if run.random_teacher
             else '') + '; the accuracies mean nothing.', flush=True)
  if meta.get('resumes'):
    print(f'Resuming {run.workdir} at step {start_step}.', flush=True)


def _settle(run, writer, clock, done):
  """Checks a dispatched call's metrics once it is done; logs the last.

  Called one call late, so that the host never waits for the device except
  to read the finite flags. A non-finite step stops the run here, before its
  state can be checkpointed. `done`: (first step, metrics, whether to log).
  """
  first, metrics, log = done
  _check_finite(run, first, metrics, run.checkpointer.latest_step())
  if log:
    values = {k: float(v[-1]) for k, v in jax.device_get(metrics).items()
              if k != 'finite'}
    step = first + len(metrics['finite']) - 1
    writer.write(dict(step=step, split='train',
                      epoch=step / run.steps_per_epoch,
                      images_per_sec=clock.images_per_sec(), **values))


def _evaluate_and_log(run, state, step, meta, writer, clock):
  """Evaluates at `step`, logs it, and keeps the best step in `meta`.

  The best is chosen on the validation split where there is one, else on
  test. Returns (results by split, meta).
  """
  eval_start = time.time()
  results = evaluate(run, state)
  clock.eval_seconds += time.time() - eval_start
  for split, result in results.items():
    writer.write(dict(step=step, split=split,
                      epoch=step / run.steps_per_epoch, **result))
  acc = results['val' if 'val' in results else 'test']['accuracy']
  if acc > meta['best_accuracy']:
    meta = dict(meta, best_accuracy=acc, best_step=step)
  return results, meta


def _start(run: run_lib.Run, start_step: int, meta: dict[str, Any],
           start_time: float):
  """Announces the run; its clock, batches and metric writer from
  `start_step`."""
  config, is_main = run.config, jax.process_index() == 0
  if is_main:
    _announce(run, start_step, meta)
  clock = _Clock(start_time, {k: meta.get(k, 0) for k in _TOTALS})
  batches = _Batches(run, start_step)
  writer = metric_writer.MetricWriter(run.workdir, start_step,
                                      enabled=is_main)
  logging.info('Training %s with %s for %d steps (%d per epoch) on %d '
               'device(s), from step %d.', config.model, config.method,
               run.total_steps, run.steps_per_epoch, jax.device_count(),
               start_step)
  return clock, batches, writer


def _stopped_early(run: run_lib.Run, step: int, interrupted: bool,
                   is_main: bool) -> dict[str, Any]:
  """Says where a stopped run saved; the summary of a stopped run."""
  if is_main:
    why = 'Interrupted (Ctrl-C)' if interrupted else 'Preempted'
    print(f'{why}: saved step {step} in {run.workdir}; run the '
          'same command again to resume.', flush=True)
  return summary_lib.stopped(run.config, step, interrupted)


def train(run: run_lib.Run, state, meta: dict[str, Any],
          start_time: float | None = None) -> dict[str, Any]:
  """Trains `run` from `state` (with its checkpoint `meta`: best accuracy,
  earlier segments' totals) to `total_steps`; returns the summary.

  Checkpoints at every log/checkpoint/eval boundary, stops cleanly on
  SIGTERM or Ctrl-C (see `train_and_evaluate`), writes metrics.jsonl and
  TensorBoard scalars, and at the end summary.json (and the export).
  """
  start_time = time.time() if start_time is None else start_time
  config, is_main = run.config, jax.process_index() == 0
  meta = dict(meta)
  start_step = int(state.step)
  clock, batches, writer = _start(run, start_step, meta, start_time)
  boundaries = (config.log_every_steps, config.checkpoint_every_steps,
                run.eval_every)

  settle = functools.partial(_settle, run, writer, clock)
  progress = _progress_bar(run, start_step, compiling=True)
  watcher = preemption.PreemptionWatcher(sync_every=config.log_every_steps)
  last_eval, pending, preempted_at = None, None, None
  step = start_step
  try:
    while step < run.total_steps:
      to_next = min(b - step % b for b in boundaries)
      k = min(config.steps_per_call, to_next, run.total_steps - step)
      state, metrics = run.multi_step(state, run.teacher_vars,
                                      batches.device_data, batches.next(k))
      first, step = step + 1, step + k
      if clock.train_start is None:
        jax.block_until_ready(metrics)
        clock.train_start = time.time()
        progress.close()
        progress = _progress_bar(run, step)
      else:
        clock.images += k * config.batch_size
        progress.update(k)
      if pending is not None:
        settle(pending)
      pending = (first, metrics, step % config.log_every_steps == 0
                 or step == run.total_steps)
      stop = watcher.should_stop(step)
      is_eval = step % run.eval_every == 0 or step == run.total_steps
      if is_eval or stop or step % config.checkpoint_every_steps == 0:
        settle(pending)  # Never checkpoint a non-finite state.
        pending = None
        if is_eval:
          last_eval, meta = _evaluate_and_log(run, state, step, meta, writer,
                                              clock)
          progress.set_postfix(
              test_acc=f'{last_eval["test"]["accuracy"]:.4f}')
        run.checkpointer.save(step, state, dict(meta, **clock.totals()))
        writer.flush()
      if stop and step < run.total_steps:
        preempted_at = step
        break
  finally:
    progress.close()
    watcher.close()
    writer.close()

  if preempted_at is not None:
    return _stopped_early(run, preempted_at, watcher.interrupted, is_main)
  if last_eval is None:  # Resumed an already finished run.
    last_eval = evaluate(run, state)
  return _finish(run, state, meta, last_eval, clock, start_time)


def _finish(run, state, meta, last_eval, clock, start_time, grid=None):
  """The summary, the export and summary.json; returns the summary's record
  (`summary.RunSummary.to_json`). `grid`: a grid member's grid record."""
  config = run.config
  wall = time.time() - start_time
  total = clock.totals()
  summary = summary_lib.RunSummary(
      model=config.model, method=config.method,
      teacher=config.teacher if run.distiller.teacher is not None else '',
      dataset=config.dataset, seed=config.seed, steps=run.total_steps,
      epochs=run.total_steps / run.steps_per_epoch,
      test_accuracy=last_eval['test']['accuracy'],
      best_accuracy=meta['best_accuracy'], best_step=meta['best_step'],
      best_on='val' if 'val' in last_eval else 'test',
      teacher_test_accuracy=run.teacher_meta.get('test_accuracy'),
      skipped_steps=int(state.skipped),
      images_per_sec=(
          total['train_images_total'] / total['train_seconds_total']
          if total['train_images_total'] else None),
      wall_seconds=wall,
      wall_seconds_total=total['wall_seconds_total'],
      resumes=meta.get('resumes', 0),
      config_changes=meta.get('config_changes', []),
      val_accuracy=(last_eval['val']['accuracy'] if 'val' in last_eval
                    else None),
      grid=grid)
  if config.export:
    summary.export = _export(run, state, summary, last_eval, wall)
  if jax.process_index() == 0:
    summary_lib.write(run.workdir, summary)
    print(f'[{config.method}] {config.model} on {config.dataset}: test '
          f'accuracy {summary.test_accuracy:.4f} after '
          f'{run.total_steps} steps ({wall:.0f} s); best '
          f'{summary.best_accuracy:.4f} at step {summary.best_step}.',
          flush=True)
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
