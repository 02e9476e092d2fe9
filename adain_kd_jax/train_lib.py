"""Training and evaluation: data, teacher, sharded init, resume, the loop.

`train_and_evaluate(config, workdir)` trains `config.model` with
`config.method` (see distill.py), distilling from a frozen exported teacher
unless the method is 'none'. The same code runs on one CPU, several simulated
CPU devices, a GPU or a TPU host: one `jax.jit` step over a `Mesh` of all
devices, the batch sharded over the 'data' axis, everything else replicated.
BatchNorm statistics are therefore over the global batch.
"""

import contextlib
import functools
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import tqdm

from adain_kd_jax import checkpoints
from adain_kd_jax import cli
from adain_kd_jax import config_checks
from adain_kd_jax.data import batching
from adain_kd_jax.data import loader
from adain_kd_jax.data import registry
from adain_kd_jax import distill
from adain_kd_jax import metric_writer
from adain_kd_jax import preemption
from adain_kd_jax import preflight
from adain_kd_jax import steps

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Kept in the checkpoints' meta, so that a resumed run adds up all its
# segments: wall time, training time (compilation and evaluation excluded)
# and the images trained on in that time.
_TOTALS = ('wall_seconds_total', 'train_seconds_total', 'train_images_total')
# The progress bar until the first call has run (compiling): no ETA yet.
_COMPILING_BAR = '{l_bar}{bar}| {n_fmt}/{total_fmt} [compiling...]'


def _resolve(path: str) -> str:
  """Relative paths: against the cwd if they exist there, else the repo."""
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(_REPO_ROOT, path)


def _mock_data(config: ml_collections.ConfigDict):
  """tfds.testing.mock_data with config.mock_data examples (0: no mock)."""
  if not config.get('mock_data', 0):
    return contextlib.nullcontext()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.testing.mock_data(num_examples=config.mock_data)


def _mock_teacher(config: ml_collections.ConfigDict, directory: str) -> bool:
  """Whether a mock-data run gets a random teacher (none exported there)."""
  return bool(config.get('mock_data', 0)) and not os.path.isfile(
      os.path.join(directory, checkpoints.TEACHER_JSON))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains and evaluates; returns the run summary (also WORKDIR/summary.json).

  When `config.compare_to` names a method, the same network is then trained
  with that method in WORKDIR/compare_<method> and both results are printed.

  summary.json holds: model, method, teacher, dataset, seed, steps, epochs;
  test_accuracy (after the last step; val_accuracy too with a holdout),
  best_accuracy and best_step (chosen on best_on: 'val' or 'test'),
  teacher_test_accuracy, skipped_steps; and, over a run that was stopped and
  resumed (each start of the command is a segment):
    images_per_sec: training images per second over all segments (each
      segment's first call, which compiles, and evaluations left out).
    wall_seconds: this segment's wall time, from its start to the summary.
    wall_seconds_total: every segment's wall time: the earlier ones up to
      the checkpoint the next one resumed from (work a killed run did after
      its last checkpoint is not counted), plus wall_seconds.
    resumes: how many times the run was resumed (0: ran in one go).
  A run stopped by SIGTERM or Ctrl-C returns {'model', 'method',
  'preempted_at': step, 'interrupted': whether it was Ctrl-C} instead.
  """
  with _mock_data(config):
    summary = _train_and_evaluate(config, workdir)
    if config.compare_to and 'preempted_at' not in summary:
      other = ml_collections.ConfigDict(config.to_dict())
      other.method = config.compare_to
      other.compare_to = ''
      other.export = False
      other_summary = _train_and_evaluate(
          other, os.path.join(workdir, f'compare_{config.compare_to}'))
      if 'preempted_at' in other_summary:
        return other_summary
      _print_comparison([summary, other_summary])
  return summary


def _train_and_evaluate(config, workdir):
  start_time = time.time()
  is_main = jax.process_index() == 0
  # Every check that can fail runs before the workdir is touched and before
  # anything is compiled: config, devices, data, teacher, disk. Their errors
  # are the user's (cli.user_errors): train.py prints them as one line.
  with cli.user_errors():
    config_checks.check(config)

    # --- Mesh: all devices, batch on 'data' ---
    num_devices = jax.device_count()
    for field in ('batch_size', 'eval_batch_size'):
      if config[field] % num_devices:
        raise ValueError(
            f'config.{field}={config[field]} is not divisible by the '
            f'{num_devices} devices; use a multiple of {num_devices}.')
    mesh = steps.create_mesh()
    replicated = NamedSharding(mesh, P())
    data_sharding = NamedSharding(mesh, P('data'))

    # --- Input ---
    info = registry.DATASETS[config.dataset]
    data = loader.open_data(config, jax.process_index(),
                            jax.process_count())
    image_shape = data.image_shape
    has_val = 'val' in data.eval_splits()
    if config.batch_size > data.num_train:
      raise ValueError(
          f'config.batch_size={config.batch_size} is larger than the '
          f'{data.num_train} training examples; lower it.')
    steps_per_epoch = batching.steps_per_epoch(data.num_train,
                                               config.batch_size)
    total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                   int(round(config.num_epochs * steps_per_epoch)))
    eval_every = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
    prep = steps.Prep(key=jax.random.key(config.seed + 1),
                mean=tuple(info.mean), std=tuple(info.std),
                crop_padding=config.crop_padding, flip=config.flip,
                steps_per_epoch=steps_per_epoch)

    # --- Model, loss and frozen teacher ---
    distiller = distill.create(config, info.num_classes, image_shape)
    teacher_vars, teacher_meta, random_teacher = None, {}, False
    if distiller.teacher is not None:
      abstract_t = jax.tree.map(
          lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
          distill.teacher_variables_struct(distiller, image_shape))
      teacher_dir = _resolve(config.teacher_checkpoint)
      random_teacher = _mock_teacher(config, teacher_dir)
      if random_teacher:
        teacher_vars = jax.jit(
            lambda: distiller.teacher.init(
                jax.random.key(config.seed + 2),
                jnp.zeros((1, *image_shape), jnp.float32), train=False),
            out_shardings=replicated)()
      else:
        teacher_vars, teacher_meta = checkpoints.load_teacher(
            teacher_dir, model=config.teacher, num_classes=info.num_classes,
            abstract_variables=abstract_t)
    if config.get('mock_data', 0) and is_main:
      print(f'Mock data: {config.mock_data} random examples per split '
            '(tfds.testing.mock_data)'
            + (f', a random {config.teacher} teacher' if random_teacher
               else '') + '; the accuracies mean nothing.', flush=True)

    # --- Optimiser, workdir and sharded init (shapes first) ---
    tx, schedule = steps.create_optimizer(config, steps_per_epoch, total_steps)
    init = functools.partial(steps.init_state, distiller, tx, image_shape,
                             num_train=data.num_train,
                             train_labels=data.train_labels)
    init_key = jax.random.key(config.seed)
    abstract_state = jax.eval_shape(init, init_key)
    state_bytes = sum(x.size * x.dtype.itemsize
                      for x in jax.tree.leaves(abstract_state))
    preflight.prepare_workdir(
        workdir, state_bytes * (config.keep_checkpoints + 2) + 2**20)
    state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
    ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'),
                                       keep=config.keep_checkpoints)
    state, meta = None, {'best_accuracy': -1.0, 'best_step': 0}
    if ckpt.latest_step() is not None:
      abstract = jax.tree.map(
          lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
          abstract_state, state_sharding)
      state, meta = ckpt.restore(abstract)
  if state is None:
    state = jax.jit(init, out_shardings=state_sharding)(init_key)
  else:
    meta = dict(meta, resumes=meta.get('resumes', 0) + 1)
    if is_main:
      print(f'Resuming {workdir} at step {int(state.step)}.', flush=True)
  start_step = int(state.step)
  # What the earlier segments of this run (before resumes) took.
  earlier = {k: meta.get(k, 0) for k in _TOTALS}

  # --- Update and evaluation steps ---
  p_multi_step = steps.jit_multi_step(mesh, distiller, tx, schedule, prep,
                                      skip_nonfinite=config.skip_nonfinite)
  p_eval_step = steps.jit_eval_step(mesh, distiller, prep)
  stacked_sharding = NamedSharding(mesh, P(None, 'data'))

  def to_global(batch, sharding=data_sharding):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def evaluate(batches):
    sums = None
    for batch in batches:
      out = p_eval_step(state, to_global(batch))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    return {'accuracy': float(sums['correct'] / sums['count']),
            'loss': float(sums['loss'] / sums['count']),
            'count': int(sums['count'])}

  def run_evals():
    return {name: evaluate(batches())
            for name, batches in data.eval_splits().items()}

  # --- Input: indices on the host; images from the host or the devices ---
  device_data = None
  if config.device_data:
    # Every device holds the training set (CIFAR-100 is 150 MB as uint8);
    # each step then gathers its batch on the device, no host transfer.
    device_data = to_global({'image': data.train_images,
                             'label': data.train_labels.astype(np.int32)},
                            replicated)
  host_batches = data.train_batches(start_step,
                                    indices_only=device_data is not None)

  def next_batches(k):
    """The next k steps' host batches, stacked and made global."""
    chunk = [next(host_batches) for _ in range(k)]
    return to_global(jax.tree.map(lambda *x: np.stack(x), *chunk),
                     stacked_sharding)

  boundaries = (config.log_every_steps, config.checkpoint_every_steps,
                eval_every)

  def chunk_size(step):
    """Steps until the next log / checkpoint / eval step, at most k."""
    to_next = min(b - step % b for b in boundaries)
    return min(config.steps_per_call, to_next, total_steps - step)

  # --- Loop ---
  writer = metric_writer.MetricWriter(workdir, start_step, enabled=is_main)
  logging.info('Training %s with %s for %d steps (%d per epoch) on %d '
               'device(s), from step %d.', config.model, config.method,
               total_steps, steps_per_epoch, num_devices, start_step)
  # Throughput counts from the end of the first call (compilation excluded)
  # and leaves evaluation time out.
  timer = {'images': 0, 'start': None, 'eval': 0.0}

  def train_seconds():
    if timer['start'] is None:
      return 0.0
    return time.time() - timer['start'] - timer['eval']

  def throughput():
    if not timer['images']:
      return None
    return timer['images'] / max(train_seconds(), 1e-9)

  def totals():
    """`_TOTALS` over this run's segments so far (see summary.json)."""
    return {'wall_seconds_total':
                earlier['wall_seconds_total'] + time.time() - start_time,
            'train_seconds_total':
                earlier['train_seconds_total'] + train_seconds(),
            'train_images_total':
                earlier['train_images_total'] + timer['images']}

  def settle(done):
    """Checks a dispatched call's metrics once it is done; logs the last.

    Called one call late, so that the host never waits for the device except
    to read the finite flags. A non-finite step stops the run here, before
    its state can be checkpointed.
    """
    first, metrics, log = done
    finite = np.asarray(jax.device_get(metrics['finite']))
    if not config.skip_nonfinite and not finite.all():
      i = int(np.argmin(finite))
      values = jax.device_get(metrics)
      bad = [k for k, v in values.items()
             if k != 'finite' and not np.isfinite(v[i])]
      raise FloatingPointError(
          f'Non-finite {", ".join(bad)} at step {first + i} (method '
          f'{config.method}). The last good checkpoint (step '
          f'{ckpt.latest_step()}) in {workdir} is intact. Lower '
          'config.learning_rate or the loss weights, check the teacher, or '
          'set --config.skip_nonfinite=True to skip such steps.')
    if log:
      values = {k: float(v[-1]) for k, v in jax.device_get(metrics).items()
                if k != 'finite'}
      step = first + len(finite) - 1
      writer.write(dict(step=step, split='train',
                        epoch=step / steps_per_epoch,
                        images_per_sec=throughput(), **values))

  def progress_bar(initial, compiling=False):
    # Until the first call has run, its time is compilation: no ETA.
    return tqdm.tqdm(total=total_steps, initial=initial, unit='step',
                     disable=not is_main, mininterval=2.0,
                     desc=f'{config.method}:{config.model}',
                     bar_format=_COMPILING_BAR if compiling else None,
                     leave=not compiling)

  progress = progress_bar(start_step, compiling=True)
  watcher = preemption.PreemptionWatcher(sync_every=config.log_every_steps)
  last_eval, pending, preempted_at = None, None, None
  step = start_step
  try:
    while step < total_steps:
      k = chunk_size(step)
      state, metrics = p_multi_step(state, teacher_vars, device_data,
                                    next_batches(k))
      first, step = step + 1, step + k
      if timer['start'] is None:
        jax.block_until_ready(metrics)
        timer['start'] = time.time()
        progress.close()
        progress = progress_bar(step)
      else:
        timer['images'] += k * config.batch_size
        progress.update(k)
      if pending is not None:
        settle(pending)
      pending = (first, metrics,
                 step % config.log_every_steps == 0 or step == total_steps)
      stop = watcher.should_stop(step)
      is_eval = step % eval_every == 0 or step == total_steps
      if is_eval or stop or step % config.checkpoint_every_steps == 0:
        settle(pending)  # Never checkpoint a non-finite state.
        pending = None
        if is_eval:
          eval_start = time.time()
          last_eval = run_evals()
          timer['eval'] += time.time() - eval_start
          for split, result in last_eval.items():
            writer.write(dict(step=step, split=split,
                              epoch=step / steps_per_epoch, **result))
          acc = last_eval['val' if has_val else 'test']['accuracy']
          if acc > meta['best_accuracy']:
            meta = dict(meta, best_accuracy=acc, best_step=step)
          progress.set_postfix(
              test_acc=f'{last_eval["test"]["accuracy"]:.4f}')
        ckpt.save(step, state, dict(meta, **totals()))
        writer.flush()
      if stop and step < total_steps:
        preempted_at = step
        break
  finally:
    progress.close()
    watcher.close()
    writer.close()
    data.close()  # Stops input worker processes, if any.
    ckpt.wait()  # In-flight saves complete even when the run fails.
    ckpt.close()

  if preempted_at is not None:
    if is_main:
      why = 'Interrupted (Ctrl-C)' if watcher.interrupted else 'Preempted'
      print(f'{why}: saved step {preempted_at} in {workdir}; run the '
            'same command again to resume.', flush=True)
    return {'model': config.model, 'method': config.method,
            'preempted_at': preempted_at,
            'interrupted': watcher.interrupted}
  if last_eval is None:  # Resumed an already finished run.
    last_eval = run_evals()
  wall = time.time() - start_time
  total = totals()
  summary = {
      'model': config.model, 'method': config.method,
      'teacher': config.teacher if distiller.teacher is not None else '',
      'dataset': config.dataset, 'seed': config.seed, 'steps': total_steps,
      'epochs': total_steps / steps_per_epoch,
      'test_accuracy': last_eval['test']['accuracy'],
      'best_accuracy': meta['best_accuracy'], 'best_step': meta['best_step'],
      'best_on': 'val' if has_val else 'test',
      'teacher_test_accuracy': teacher_meta.get('test_accuracy'),
      'skipped_steps': int(state.skipped),
      'images_per_sec': (
          total['train_images_total'] / total['train_seconds_total']
          if total['train_images_total'] else None),
      'wall_seconds': wall,
      'wall_seconds_total': total['wall_seconds_total'],
      'resumes': meta.get('resumes', 0),
  }
  if has_val:
    summary['val_accuracy'] = last_eval['val']['accuracy']

  if config.export:
    export_dir = os.path.join(workdir, 'export')
    variables = {'params': state.params['student'],
                 'batch_stats': state.batch_stats['student']}
    checkpoints.save_teacher(export_dir, variables, {
        'model': config.model, 'num_classes': info.num_classes,
        'dataset': config.dataset, 'image_shape': list(image_shape),
        'test_accuracy': summary['test_accuracy'],
        'test_examples': last_eval['test']['count'],
        'trained_with': {k: v for k, v in config.to_dict().items()
                         if not isinstance(v, dict)},
        'wall_seconds': wall}, step=total_steps)
    summary['export'] = export_dir
  if is_main:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=2)
    print(f'[{config.method}] {config.model} on {config.dataset}: test '
          f'accuracy {summary["test_accuracy"]:.4f} after {total_steps} '
          f'steps ({wall:.0f} s); best {summary["best_accuracy"]:.4f} at '
          f'step {summary["best_step"]}.', flush=True)
  return summary


def _print_comparison(summaries):
  if jax.process_index() != 0:
    return
  first = summaries[0]
  teacher = first.get('teacher_test_accuracy')
  lines = [f'Student {first["model"]} on {first["dataset"]}'
           + (f', teacher {first["teacher"]} (test accuracy {teacher:.4f})'
              if teacher is not None else '') + ':']
  for s in summaries:
    lines.append(f'  {s["method"]:>9}: test accuracy {s["test_accuracy"]:.4f}'
                 f' (best {s["best_accuracy"]:.4f}, {s["steps"]} steps, '
                 f'{s["wall_seconds_total"]:.0f} s)')
  print('\n'.join(lines), flush=True)

