r"""A campaign: many runs, spread over short accelerator slots, that add up.

  python -m adain_kd_jax.experiments.campaign \
      --plan=results/fashion_mnist_benchmark/plan.py \
      --workdir=results/fashion_mnist_benchmark/runs --parallel=12 \
      --minutes=9 --archive=/tmp/chunk.tar.gz \
      [--only=tune/] [--set=device_data=True,steps_per_call=16] [--toy]

A plan file's `get_plan(workdir)` returns `parallel.PlannedRun`s in
priority order: each names a config file (with its argument), field
overrides, the paths it needs (a teacher) and, for a teacher, where its
export goes. Every invocation trains
what is unfinished (in `--workdir/<name>`, N processes at once on one
accelerator, see parallel.py) until its time is up: no run starts in the
last `--tail_minutes` minutes, and at `--minutes` the running ones save a
checkpoint and stop. A plan may add runs once earlier ones have finished
(e.g. the final grid once tuning has chosen, `best_on_val`). The next
invocation skips finished runs (their
`summary.json` exists) and resumes stopped ones; with the finished runs
committed, chunks on different machines add up. A run another trainer has
claimed (training/claims.py: another campaign on the same workdir, a
train.py) is left to it; `--list` shows it as claimed, by whom.

`--slurm="SBATCH OPTIONS"` submits the unfinished runs to SLURM instead
(slurm.py: generated job scripts in WORKDIR/slurm/, teachers first, their
dependants after them, arrays throttled by --slurm_throttle, grids with
--grid); submitting again submits only what is neither finished, claimed nor
queued, and `--list` then says which runs are queued or running under which
job.

`--archive` packs every run's summary.json, metrics.jsonl, config.json and
log.txt, and the exported teachers, into one tar.gz (what comes back from a
leased machine). `--toy` shrinks every run to a few steps on a few hundred
examples: a dry run of the whole plan on a CPU.
"""

import importlib.util
import os
import sys
import tarfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import ml_collections

from adain_kd_jax import cli
from adain_kd_jax.experiments import estimates
from adain_kd_jax.experiments import parallel
from adain_kd_jax.experiments import slurm
from adain_kd_jax.training import claims
from adain_kd_jax.training import run_record

FLAGS = flags.FLAGS

# Files of a run that are results (checkpoints are not).
RESULT_FILES = ('summary.json', 'metrics.jsonl', 'config.json', 'log.txt')
TOY = {'num_train_steps': 6, 'train_limit': 768, 'test_limit': 500,
       'eval_every_epochs': 1.0, 'eval_batch_size': 250, 'batch_size': 64,
       'log_every_steps': 3, 'checkpoint_every_steps': 3,
       'crd.num_negatives': 64}


def best_on_val(settings: dict[str, Sequence[str]]) -> str | None:
  """The setting whose runs have the highest mean validation top-1.

  Tuning chooses on the validation split only (the last epoch's
  `val_accuracy` in each run's summary.json), never on test.

  Args:
    settings: {setting name: its run directories}.

  Returns:
    The best setting's name (the first one on a tie), or None while any run
    has not finished: a plan adds the runs that depend on a choice only once
    it can be made.
  """
  best, best_val = None, None
  for name, run_dirs in settings.items():
    values = []
    for run_dir in run_dirs:
      path = os.path.join(run_dir, 'summary.json')
      if not os.path.exists(path):
        return None
      values.append(parallel.read_summary(run_dir)['val_accuracy'])
    mean = sum(values) / len(values)
    if best_val is None or mean > best_val:
      best, best_val = name, mean
  return best


def _load_module(path: str):
  path = cli.resolve_path(path)
  if cli.project_root() not in sys.path:
    sys.path.insert(0, cli.project_root())
  name = 'adain_kd_plan_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py[:arg]' -> its get_config([arg])."""
  path, sep, arg = spec.partition(':')
  module = _load_module(path)
  return module.get_config(arg) if sep else module.get_config()


def set_field(config: ml_collections.ConfigDict, field: str, value) -> None:
  """config.a.b = value for field 'a.b'; an unknown field is an error."""
  *parents, leaf = field.split('.')
  node = config
  for part in parents:
    if part not in node:
      raise KeyError(f'No config field {field!r}.')
    node = node[part]
  if leaf not in node:
    raise KeyError(f'No config field {field!r}.')
  node[leaf] = value


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
  """['a=1', 'b.c=True'] -> {'a': 1, 'b.c': True} (Python literals)."""
  import ast  # pylint: disable=g-import-not-at-top
  out = {}
  for item in items:
    field, sep, value = item.partition('=')
    if not sep:
      raise app.UsageError(f'--set item {item!r} is not field=value.')
    try:
      out[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[field] = value
  return out


def _run_config(run: parallel.PlannedRun, sets: dict[str, Any], toy: bool,
                moved) -> ml_collections.ConfigDict:
  """One run's checked config: the plan's, its overrides, the toy switches
  and --set."""
  from adain_kd_jax.training import config_checks
  config = load_config(run.config)
  for field, value in {**run.overrides, **(TOY if toy else {}),
                       **sets}.items():
    set_field(config, field, value)
  if toy:
    config.holdout = 128 if config.holdout else 0
    config.train_per_class = 32 if config.train_per_class else 0
    if config.teacher_checkpoint:
      config.teacher_checkpoint = os.path.abspath(
          moved(config.teacher_checkpoint))
  config = run_record.one_run(config)
  config_checks.check(config)
  return config


def build_jobs(runs: Sequence[parallel.PlannedRun], workdir: str,
               sets: dict[str, Any],
               toy: bool = False) -> list[parallel.Job]:
  """The parallel.Jobs of a plan (configs built and checked here).

  Raises:
    app.UsageError: a run of the plan is faulty (one line naming the run and
      the field).
  """
  # A toy run's teachers go to the workdir, never to the repository's.
  moved = (lambda p: os.path.join(workdir, 'toy', p)) if toy else (
      lambda p: p)
  jobs = []
  for run in runs:
    try:
      config = _run_config(run, sets, toy, moved)
    except (KeyError, ValueError, OSError, SyntaxError) as e:
      # A faulty plan: one line naming the run and, in the message, the field.
      raise app.UsageError(f'plan run {run.name!r} ({run.config}): '
                           f'{cli.message(e)}') from e
    jobs.append(parallel.Job(
        os.path.join(workdir, run.name), config,
        needs=tuple(moved(p) for p in run.needs),
        export_to=run.export_to and moved(run.export_to)))
  return jobs


def _arcname(path: str) -> str:
  """Repository-relative where possible, so that the archive unpacks in it."""
  path = os.path.abspath(path)
  root = cli.project_root()
  if path.startswith(root + os.sep):
    return os.path.relpath(path, root)
  return os.path.relpath(path)


def write_archive(path: str, jobs: Sequence[parallel.Job]) -> int:
  """Packs the runs' result files and the teachers; returns the file count."""
  count = 0
  tmp = f'{path}.tmp{os.getpid()}'
  with tarfile.open(tmp, 'w:gz') as tar:
    for job in jobs:
      for name in RESULT_FILES:
        file = os.path.join(job.run_dir, name)
        if os.path.exists(file):
          tar.add(file, arcname=_arcname(file))
          count += 1
      teacher = job.export_to and cli.resolve_path(job.export_to)
      if teacher and os.path.isdir(teacher):
        tar.add(teacher, arcname=_arcname(teacher))
        count += 1
  os.replace(tmp, path)
  return count


def _define_flags():
  """The command's flags; here, not at import (sweep shares some names)."""
  flags.DEFINE_string('plan', None, 'A plan file (get_plan() -> Runs).')
  flags.DEFINE_string('workdir', None, 'Runs go to WORKDIR/<name>.')
  flags.DEFINE_integer('parallel', 1, 'Runs at once.')
  flags.DEFINE_float(
      'minutes', 0.0, 'Running runs save and stop after this many minutes '
      '(0 = no limit).')
  flags.DEFINE_float(
      'tail_minutes', 2.0, 'No run starts in the last this many minutes of '
      '--minutes.')
  flags.DEFINE_list('only', [], 'Only runs whose name starts with one of '
                    'these prefixes.')
  flags.DEFINE_list(
      'set', [], 'field=value overrides for every run (e.g. device_data=True,'
      'steps_per_call=16 on an accelerator); values are Python literals.')
  flags.DEFINE_bool('toy', False, 'A few steps per run on a few hundred '
                    'examples: a dry run of the plan.')
  flags.DEFINE_string('archive', '', 'Write a tar.gz of the results here.')
  flags.DEFINE_bool('grid', False, 'Train ready runs that can share as '
                    'grids in this process (campaign_grid.py).')
  flags.DEFINE_bool('list', False, 'List the runs and their state; train '
                    'nothing.')
  flags.DEFINE_string('slurm', None, 'Submit to SLURM instead of training '
                      'here: the sbatch options of every job, e.g. '
                      '"--gres=gpu:1 --time=04:00:00" (slurm.py).')
  flags.DEFINE_integer('slurm_throttle', 8, 'With --slurm: at most this many '
                       'tasks of one array at once.')


def _list(jobs: Sequence[parallel.Job]) -> None:
  """Prints each run's state and, for a pending one, its steps and its
  estimated time (estimates.py), then the pending runs' totals."""
  known = estimates.speeds(j.run_dir for j in jobs)
  pending = [j for j in jobs if not j.finished]
  if any(os.path.exists(os.path.join(j.run_dir, slurm.SLURM_JSON))
         for j in jobs):
    lines = [f'{job.run_dir}  {state}'
             for job, state in zip(jobs, slurm.states(jobs))]
  else:
    lines = []
    for job in jobs:
      holder = None if job.finished else claims.holder(job.run_dir)
      state = ('finished' if job.finished else 'claimed' if holder else
               'ready' if job.ready() else 'waiting')
      lines.append(f'{state:>8}  {job.run_dir}'
                   + (f'  (by {holder})' if holder else ''))
  for job, line in zip(jobs, lines):
    print(line + ('' if job.finished else
                  f'  [{estimates.describe(job.config, known)}]'))
  if not pending:
    return
  steps = [estimates.train_steps(j.config) for j in pending]
  times = {}
  for job in pending:
    for device, seconds in estimates.estimates(job.config, known).items():
      times.setdefault(device, []).append(seconds)
  print(f'Pending: {len(pending)} run(s), '
        f'{sum(s for s in steps if s is not None):,} steps'
        + (f' ({steps.count(None)} of unknown length)' if None in steps
           else '')
        + ''.join(f'; ~{estimates.duration(sum(t))} on {device} for the '
                  f'{len(t)} run(s) with a known speed'
                  for device, t in sorted(times.items())) + '.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.parallel < 1:
    raise app.UsageError(f'--parallel={FLAGS.parallel} must be >= 1.')
  try:
    runs = _load_module(FLAGS.plan).get_plan(FLAGS.workdir)
  except (OSError, SyntaxError) as e:
    raise app.UsageError(f'--plan={FLAGS.plan}: {cli.message(e)}') from e
  if FLAGS.only:
    runs = [r for r in runs if r.name.startswith(tuple(FLAGS.only))]
  jobs = build_jobs(runs, FLAGS.workdir, parse_sets(FLAGS.set), FLAGS.toy)
  if FLAGS.list:
    _list(jobs)
    return
  if FLAGS.slurm is not None:
    with cli.user_errors():
      status = slurm.submit(jobs, FLAGS.workdir, FLAGS.slurm,
                            FLAGS.slurm_throttle, grid=FLAGS.grid)
    counts = {}
    for value in status.values():
      key = value.split(' by ')[0].split(' under ')[0].split(' as ')[0]
      key = key.split(' for ')[0]
      counts[key] = counts.get(key, 0) + 1
    print(f'Campaign: {len(jobs)} runs: '
          + ', '.join(f'{n} {k}' for k, n in sorted(counts.items()))
          + '; `--list` follows them.', flush=True)
    return
  minutes = FLAGS.minutes or float('inf')
  start = time.time()
  if FLAGS.grid:
    from adain_kd_jax import host_setup
    from adain_kd_jax.experiments import campaign_grid
    # One CPU device, YNNPACK, no compilation cache: what it ran before.
    host_setup.prepare((1,), cpu_devices='1', ynnpack=True,
                       compilation_cache='')
    status = campaign_grid.run_jobs_as_grids(
        jobs, FLAGS.parallel, log=lambda line: print(line, flush=True))
  else:
    status = parallel.run_jobs(
        jobs, FLAGS.parallel,
        start_before_s=60 * (minutes - FLAGS.tail_minutes),
        stop_at_s=60 * minutes, log=lambda line: print(line, flush=True))
  counts = {}
  for value in status.values():
    key = value.split(' (')[0].split(' for ')[0]
    counts[key] = counts.get(key, 0) + 1
  print(f'Campaign: {len(jobs)} runs in {time.time() - start:.0f} s: '
        + ', '.join(f'{n} {k}' for k, n in sorted(counts.items())),
        flush=True)
  for run_dir, value in status.items():
    if value.startswith('failed'):
      print(f'  {run_dir}: {value}; see {run_dir}/log.txt', flush=True)
  from adain_kd_jax.experiments import report  # pylint: disable=g-import-not-at-top
  text = report.trained_tables([job.run_dir for job in jobs])
  if text:
    print(text, flush=True)
  if FLAGS.archive:
    n = write_archive(FLAGS.archive, jobs)
    print(f'Archive {FLAGS.archive}: {n} entries.', flush=True)


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['plan', 'workdir'])
  cli.run(main)
