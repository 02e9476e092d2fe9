"""Several training runs at once on one machine, each in its own process.

Small models leave most of an accelerator idle; N `train.py` processes side by
side, each allowed a fraction of the device memory
(`XLA_PYTHON_CLIENT_MEM_FRACTION`), keep it busy. Used by `sweep --parallel`
and by `campaign`.

A job is a run directory that holds the run's `config.json`; its process is
`train.py --config=configs/from_json.py:<dir>/config.json --workdir=<dir>`,
so it trains exactly that config and, when the directory has checkpoints,
resumes. A run is finished when its `summary.json` exists. A job may wait for
paths that another job makes (a teacher export): it starts once they exist.

Claims (training/claims.py): a job is claimed here before its process
starts, the claim handed to the child (which adopts it) and released when the
child ends; a job claimed by another trainer (a second campaign on the same
workdir, a SLURM task) is left to it and another job starts instead, and a
job found finished once claimed is skipped.

Budgets: no job starts after `start_before_s`; at `stop_at_s` the running
jobs get SIGTERM, save a checkpoint at their next step and exit, so the next
invocation resumes them.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from adain_kd_jax import cli
from adain_kd_jax.training import claims
from adain_kd_jax.training import run_record
from adain_kd_jax.training import summary as summary_lib

MEM_FRACTION_ENV = 'XLA_PYTHON_CLIENT_MEM_FRACTION'
# train.py's exit status after Ctrl-C (it saved a checkpoint first).
INTERRUPTED_EXIT = 130
# Left to XLA's own use and to other processes when N runs share a device.
_MEMORY_IN_USE = 0.9


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  """One run of a campaign's plan (see campaign.py), before it is a `Job`."""
  name: str  # Its directory under the workdir, e.g. 'tune/kd/t4/seed100'.
  config: str  # 'configs/x.py' or 'configs/x.py:arg'.
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  needs: tuple[str, ...] = ()  # E.g. the teacher's directory.
  export_to: str = ''  # A teacher run: copy WORKDIR/<name>/export here.


@dataclasses.dataclass
class Job:
  """One run: its directory, its config and what it waits for."""
  run_dir: str
  config: ml_collections.ConfigDict
  needs: tuple[str, ...] = ()  # Paths that must exist before it starts.
  # After success, copy run_dir/export here (a teacher for later jobs).
  export_to: str = ''

  @property
  def finished(self) -> bool:
    return summary_lib.finished(self.run_dir)

  def ready(self) -> bool:
    return all(os.path.exists(cli.resolve_path(p)) for p in self.needs)


# A running job: the job, its train.py process, the file it logs to and its
# claim.
_Child = tuple[Job, subprocess.Popen, Any, claims.Claim]


def write_config(run_dir: str, config: ml_collections.ConfigDict) -> str:
  """Writes run_dir/config.json (atomically); returns its path."""
  return run_record.write(run_dir, config)


def train_command(run_dir: str) -> list[str]:
  """The train command line that trains run_dir/config.json."""
  return [sys.executable, '-m', 'adain_kd_jax.main',
          '--config=' + os.path.join(cli.project_root(), 'configs',
                                     'from_json.py')
          + ':' + os.path.abspath(os.path.join(run_dir, 'config.json')),
          '--workdir=' + os.path.abspath(run_dir)]


def child_env(parallel: int) -> dict[str, str]:
  """The environment of a child: a share of the device memory each."""
  env = dict(os.environ)
  env.setdefault(MEM_FRACTION_ENV, f'{_MEMORY_IN_USE / max(parallel, 1):.3f}')
  env['PYTHONPATH'] = os.pathsep.join(
      p for p in (cli.project_root(), cli.PACKAGE_ROOT, env.get('PYTHONPATH'))
      if p)
  return env


def _publish(export_dir: str, dest: str) -> None:
  """Copies a finished run's export to dest (atomically: copy, rename)."""
  dest = cli.resolve_path(dest)
  if os.path.exists(dest):
    return
  tmp = f'{dest}.tmp{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(export_dir, tmp)
  os.replace(tmp, dest)


def _publish_export(job: Job) -> None:
  """Copies a finished teacher run's export where later jobs look for it."""
  if job.export_to:
    _publish(os.path.join(job.run_dir, 'export'), job.export_to)


def _skip_finished(jobs: Sequence[Job]) -> tuple[dict[str, str], list[Job]]:
  """({run_dir: 'skipped'} of the finished jobs, the others in order).

  The exports of finished teacher runs are published (again, if need be).
  """
  status, pending = {}, []
  for job in jobs:
    if job.finished:
      status[job.run_dir] = 'skipped'
      _publish_export(job)
    else:
      pending.append(job)
  return status, pending


def _claim(job: Job) -> claims.Claim | str:
  """The job's claim, or why it is not to be started here: 'skipped'
  (finished by another trainer) or 'claimed by ...'."""
  try:
    claim = claims.acquire(job.run_dir)
  except claims.Claimed as e:
    return f'claimed ({e})'
  if job.finished:  # Trained to the end since we looked.
    claim.release()
    return 'skipped'
  return claim


def _start(job: Job, env: dict[str, str], claim: claims.Claim) -> _Child:
  """Writes the job's config and starts its train.py, logging to log.txt;
  the child adopts `claim`."""
  try:
    write_config(job.run_dir, job.config)
    log_file = open(os.path.join(job.run_dir, 'log.txt'), 'a')
    proc = subprocess.Popen(
        train_command(job.run_dir),
        env=dict(env, **{claims.TOKEN_ENV: claim.record['token']}),
        stdout=log_file, stderr=subprocess.STDOUT, cwd=cli.project_root())
  except BaseException:
    claim.release()
    raise
  return job, proc, log_file, claim


def _stop_all(running: dict[str, _Child]) -> None:
  """SIGTERM to every child: each saves a checkpoint and exits."""
  for _, proc, _, _ in running.values():
    proc.send_signal(signal.SIGTERM)


def _exit_status(job: Job, code: int) -> str:
  """'finished', 'stopped' or 'failed (exit N)' of a job whose process ended."""
  if code == 0 and job.finished:
    return 'finished'
  if code in (0, INTERRUPTED_EXIT):  # Saved and stopped (SIGTERM/INT).
    return 'stopped'
  return f'failed (exit {code})'


def _unstarted_status(job: Job) -> str:
  """'waiting for <path>' (the first missing need) or 'not started'."""
  missing = [p for p in job.needs if not os.path.exists(cli.resolve_path(p))]
  return f'waiting for {missing[0]}' if missing else 'not started'


def run_jobs(jobs: Sequence[Job], parallel: int, *,
             start_before_s: float = float('inf'),
             stop_at_s: float = float('inf'),
             poll_s: float = 1.0,
             log: Callable[[str], None] = print) -> dict[str, str]:
  """Runs the unfinished jobs, at most `parallel` at a time, in order.

  Args:
    jobs: in priority order; finished ones are skipped.
    parallel: processes at once (>= 1).
    start_before_s: no job starts later than this many seconds from now.
    stop_at_s: running jobs get SIGTERM this many seconds from now (they
      checkpoint and exit; the next call resumes them).
    poll_s: how often to look at the children.
    log: one line per event.

  Returns:
    {run_dir: 'finished' | 'skipped' | 'failed (exit N)' | 'stopped' |
     'claimed (<holder>)' | 'not started' | 'waiting for <path>'} for every
    job ('claimed': another trainer holds it; claims.py).
  """
  if parallel < 1:
    raise ValueError(f'parallel={parallel} is invalid: it must be >= 1.')
  start = time.time()
  status, pending = _skip_finished(jobs)
  running: dict[str, _Child] = {}
  stopping = False
  env = child_env(parallel)
  while pending or running:
    elapsed = time.time() - start
    if not stopping and elapsed >= stop_at_s and running:
      stopping = True
      _stop_all(running)
      log(f'{elapsed:.0f} s: stop time; {len(running)} run(s) told to save '
          'and stop.')
    for run_dir, (job, proc, log_file, claim) in list(running.items()):
      code = proc.poll()
      if code is None:
        continue
      log_file.close()
      claim.release()
      del running[run_dir]
      status[run_dir] = _exit_status(job, code)
      if status[run_dir] == 'finished':
        _publish_export(job)
      log(f'{time.time() - start:.0f} s: {run_dir}: {status[run_dir]}.')
    can_start = not stopping and time.time() - start < start_before_s
    while can_start and pending and len(running) < parallel:
      job = next((j for j in pending if j.ready()), None)
      if job is None:
        break
      pending.remove(job)
      claim = _claim(job)
      if isinstance(claim, str):
        status[job.run_dir] = claim
        log(f'{time.time() - start:.0f} s: {job.run_dir}: {claim}.')
        continue
      running[job.run_dir] = _start(job, env, claim)
      log(f'{time.time() - start:.0f} s: started {job.run_dir}.')
    if not running and (not can_start or not any(
        j.ready() for j in pending)):
      break
    try:
      time.sleep(poll_s)
    except KeyboardInterrupt:
      # Ctrl-C reached the children too (same process group): each saves a
      # checkpoint and exits; wait for them and start nothing more.
      stopping = True
      log('Interrupted: waiting for the running runs to save and stop.')
  for job in pending:
    status[job.run_dir] = _unstarted_status(job)
  return status


def read_summary(run_dir: str) -> dict:
  with open(os.path.join(run_dir, 'summary.json')) as f:
    return json.load(f)
