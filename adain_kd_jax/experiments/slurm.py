"""A campaign's plan as SLURM jobs (`campaign --slurm=...`): SLURM schedules.

`submit(jobs, workdir, sbatch_args)` submits what is neither finished, nor
claimed (training/claims.py), nor queued already, as generated job scripts
written to WORKDIR/slurm/ (readable, and re-submittable by hand with
`sbatch WORKDIR/slurm/<name>.sbatch`; each submission writes its own files,
named <kind>-<date>-<time>-<pid>):

  * teachers-*.sbatch: the teacher runs (those that export), one array task
    each;
  * runs-*.sbatch: the other ready runs, one array task each (or, with
    `grid`, one grid of runs that can share per task);
  * dependants-*.sbatch: the runs that wait for a teacher, likewise, with
    `--dependency=afterok:<the teachers' job>`.

Arrays carry a throttle (`%N`: at most N tasks at once) and ask for
`--requeue` and `--signal=USR1@120` (the extra stop signal, preemption.py,
two minutes before the time limit). Each task runs, as a job step (`srun`,
which the time limit's warning and `scancel --signal` reach),
`python -m adain_kd_jax.experiments.slurm_task <name>.runs.json` with its
task index: it claims its runs, trains them (parallel.run_jobs, or a grid),
publishes a teacher's export, and exits non-zero unless all are finished, so
that dependants start only after their teacher succeeded; after the stop
signal it requeues itself, and the requeued task resumes. Every submitted run
records its array task in RUN_DIR/slurm.json; `states` reads squeue, so that
`campaign --list` says 'queued' or 'running' under job N.
"""

import json
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

from adain_kd_jax import cli
from adain_kd_jax.experiments import parallel
from adain_kd_jax.training import claims
from adain_kd_jax.training import preemption
from adain_kd_jax.training import run_record

SLURM_JSON = 'slurm.json'
# Seconds before the time limit that SLURM sends the stop signal: time to
# finish a step and save (`--slurm="--signal=USR1@N"` sets another).
WARNING_S = 120


def _squeue() -> dict[str, str]:
  """{'J_k': 'PENDING' | 'RUNNING' | ...} of the queued array tasks."""
  proc = subprocess.run(['squeue', '-h', '-r', '-o', '%i %T'],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise OSError(f'squeue failed ({proc.stderr.strip()}); is SLURM '
                  'reachable from here (scripts/slurm_local.sh start)?')
  return dict(line.split()[:2] for line in proc.stdout.splitlines()
              if line.strip())


def queued_task(run_dir: str, queue: dict[str, str]) -> tuple[str, str]:
  """(array task 'J_k', its squeue state) of run_dir, or ('', '')."""
  try:
    with open(os.path.join(run_dir, SLURM_JSON)) as f:
      task = json.load(f)['task']
  except (FileNotFoundError, json.JSONDecodeError, KeyError):
    return '', ''
  return (task, queue[task]) if task in queue else ('', '')


def states(jobs: Sequence[parallel.Job]) -> list[str]:
  """Each job's state: 'finished', 'running under job J_k', 'queued under
  job J_k', 'claimed by ...', 'ready' or 'waiting'."""
  queue = _squeue()
  out = []
  for job in jobs:
    task, state = queued_task(job.run_dir, queue)
    holder = claims.holder(job.run_dir)
    if job.finished:
      out.append('finished')
    elif task:
      out.append(f'{"running" if state == "RUNNING" else "queued"} under '
                 f'job {task}')
    elif holder:
      out.append(f'claimed by {holder}')
    else:
      out.append('ready' if job.ready() else 'waiting')
  return out


def _script(name: str, slurm_dir: str, sbatch_args: Sequence[str],
            num_tasks: int, throttle: int, dependency: str) -> str:
  """The job script's text."""
  lines = ['#!/bin/bash',
           f'# {name}: written by `campaign --slurm`. Resubmit with',
           f'#   sbatch {os.path.join(slurm_dir, name)}.sbatch',
           '# (add --dependency= to drop a dependency on a job that has '
           'ended).',
           f'#SBATCH --job-name={name}',
           f'#SBATCH --array=0-{num_tasks - 1}%{throttle}',
           f'#SBATCH --output={slurm_dir}/{name}_%A_%a.log']
  if dependency:
    lines.append(f'#SBATCH --dependency={dependency}')
  # Requeued after the stop signal (slurm_task.py): the log goes on, and the
  # time limit's warning is that signal, unless the options name their own.
  lines += ['#SBATCH --requeue', '#SBATCH --open-mode=append']
  signum = preemption.extra_stop_signal()
  if signum is not None and not any(a.startswith('--signal')
                                    for a in sbatch_args):
    lines.append(f'#SBATCH --signal={signum.name[3:]}@{WARNING_S}')
  lines += [f'#SBATCH {arg}' for arg in sbatch_args]
  runs_json = os.path.join(slurm_dir, f'{name}.runs.json')
  # A job step (srun), not the batch shell: `scancel --signal=USR1` and the
  # time limit's warning reach job steps only.
  lines += ['', f'cd {shlex.quote(cli.project_root())}',
            f'exec srun --ntasks=1 {shlex.quote(sys.executable)} -m '
            'adain_kd_jax.experiments.slurm_task '
            f'{shlex.quote(runs_json)} "$SLURM_ARRAY_TASK_ID"', '']
  return '\n'.join(lines)


def _sbatch(path: str) -> str:
  proc = subprocess.run(['sbatch', '--parsable', path], capture_output=True,
                        text=True, check=False)
  if proc.returncode:
    raise OSError(f'sbatch {path} failed: {proc.stderr.strip()}')
  return proc.stdout.strip().split(';')[0]


def _entry(job: parallel.Job) -> dict:
  return {'run_dir': os.path.abspath(job.run_dir), 'needs': list(job.needs),
          'export_to': job.export_to}


def _submit_array(name, tasks, workdir, sbatch_args, throttle, dependency):
  """Writes NAME.runs.json and NAME.sbatch, submits; returns the job id."""
  slurm_dir = os.path.abspath(os.path.join(workdir, 'slurm'))
  os.makedirs(slurm_dir, exist_ok=True)
  # One set of files per submission: an earlier one's tasks may still read
  # theirs.
  name = f'{name}-{time.strftime("%Y%m%d-%H%M%S")}-{os.getpid()}'
  run_record.write_json(os.path.join(slurm_dir, f'{name}.runs.json'),
                        [[_entry(j) for j in task] for task in tasks])
  path = os.path.join(slurm_dir, f'{name}.sbatch')
  run_record.write_text(path, _script(name, slurm_dir, sbatch_args,
                                      len(tasks), throttle, dependency))
  job_id = _sbatch(path)
  for k, task in enumerate(tasks):
    for job in task:
      run_record.write_json(os.path.join(job.run_dir, SLURM_JSON),
                            {'task': f'{job_id}_{k}', 'script': path})
  return job_id


def submit(jobs: Sequence[parallel.Job], workdir: str, sbatch_args: str,
           throttle: int = 8, grid: bool = False,
           log: Callable[[str], None] = print) -> dict[str, str]:
  """Submits the plan's jobs that are neither finished, claimed nor queued.

  Returns {run_dir: 'finished' | 'claimed by ...' | 'queued under job J_k'
  | 'submitted as J_k' | 'waiting for <path>'}.
  """
  if throttle < 1:
    raise ValueError(f'--slurm_throttle={throttle} must be >= 1.')
  args = shlex.split(sbatch_args)
  queue = _squeue()
  status, todo = {}, []
  for job in jobs:
    task, _ = queued_task(job.run_dir, queue)
    holder = claims.holder(job.run_dir)
    if job.finished:
      status[job.run_dir] = 'finished'
    elif task:
      status[job.run_dir] = f'queued under job {task}'
    elif holder:
      status[job.run_dir] = f'claimed by {holder}'
    else:
      todo.append(job)
  for job in todo:
    parallel.write_config(job.run_dir, job.config)
  teachers = [j for j in todo if j.export_to]
  teacher_job = ''
  if teachers:
    teacher_job = _submit_array('teachers', [[j] for j in teachers],
                                workdir, args, throttle, '')
    for k, j in enumerate(teachers):
      status[j.run_dir] = f'submitted as {teacher_job}_{k}'
    log(f'teachers: {len(teachers)} run(s) as job {teacher_job}.')
  exported = {os.path.abspath(cli.resolve_path(j.export_to))
              for j in teachers}
  queued_exports = {}  # A teacher queued by an earlier submission.
  for job in jobs:
    task, _ = queued_task(job.run_dir, queue)
    if job.export_to and task:
      queued_exports[os.path.abspath(cli.resolve_path(job.export_to))] = \
          task.split('_')[0]
  after, now = [], []
  for job in (j for j in todo if not j.export_to):
    missing = [p for p in job.needs
               if not os.path.exists(cli.resolve_path(p))]
    paths = {os.path.abspath(cli.resolve_path(p)) for p in missing}
    if not missing:
      now.append(job)
    elif paths <= exported | set(queued_exports):
      after.append(job)
    else:
      status[job.run_dir] = f'waiting for {missing[0]}'
  for name, group in (('runs', now), ('dependants', after)):
    if not group:
      continue
    deps = sorted({teacher_job} if name == 'dependants' and teacher_job
                  else set()) + sorted(set(queued_exports.values())
                                       if name == 'dependants' else set())
    tasks = _pack(group) if grid else [[j] for j in group]
    job_id = _submit_array(name, tasks, workdir, args, throttle,
                           'afterok:' + ':'.join(deps) if deps else '')
    for k, task in enumerate(tasks):
      for j in task:
        status[j.run_dir] = f'submitted as {job_id}_{k}'
    log(f'{name}: {len(group)} run(s) in {len(tasks)} task(s) as job '
        f'{job_id}' + (f', after {", ".join(deps)}' if deps else '') + '.')
  return status


def _pack(jobs: Sequence[parallel.Job]) -> list[list[parallel.Job]]:
  """Runs that can share a grid (grid.group_key), one pack per task."""
  from adain_kd_jax.training import grid  # pylint: disable=g-import-not-at-top
  packs = {}
  for job in jobs:
    packs.setdefault(grid.group_key(job.config), []).append(job)
  return list(packs.values())
