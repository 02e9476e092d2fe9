r"""One SLURM array task of a campaign (`campaign --slurm`, slurm.py).

  python -m adain_kd_jax.experiments.slurm_task WORKDIR/slurm/runs.runs.json \
      $SLURM_ARRAY_TASK_ID

Trains the runs of task K of the list (each run's config.json, written at
submission): one run as `parallel.run_jobs` trains it (claimed, a train.py
child, a teacher's export published), several as one grid
(campaign_grid.py). Exits 0 only if every run of the task is finished, so
that `--dependency=afterok` holds a teacher's dependants back otherwise.
SIGTERM (scancel) and the extra stop signal (preemption.py; SLURM sends it
before the time limit, `--signal=USR1@120` in the job script, and
`scancel --signal=USR1 J_k` sends it by hand) are passed on to the runs'
processes, which save a checkpoint and stop. After the extra stop signal the
task requeues itself (`scontrol requeue`; the job script says `--requeue`)
unless its runs finished anyway: the requeued task resumes them bit for bit.
After SIGTERM (a cancel) it does not; the next submission resumes them.
"""

import json
import os
import signal
import subprocess
import sys

from adain_kd_jax.experiments import parallel
from adain_kd_jax.training import preemption
from adain_kd_jax.training import run_record

_received = []  # The stop signals this task got.


def _forward(signum, frame):
  """Passes a stop signal (scancel's SIGTERM, the time-limit warning) on to
  the runs' processes, which save and stop, instead of orphaning them."""
  del frame
  _received.append(signum)
  signal.signal(signum, signal.SIG_IGN)  # killpg reaches this process too.
  os.killpg(os.getpgid(0), signum)


def _requeue() -> bool:
  """Puts this array task back in the queue (`scontrol requeue`); whether
  SLURM took it. SLURM holds a requeued job for about two minutes before it
  may start again (`scontrol update JobId=J_k StartTime=now` releases it)."""
  job = os.environ.get('SLURM_JOB_ID')
  if not job:
    return False
  proc = subprocess.run(['scontrol', 'requeue', job], capture_output=True,
                        text=True, check=False)
  print(f'Stopped by the stop signal: requeue of job {job}: '
        + ('done' if proc.returncode == 0 else
           f'failed ({proc.stderr.strip()})') + '.', flush=True)
  return proc.returncode == 0


def main(argv) -> int:
  if len(argv) != 3:
    print('usage: python -m adain_kd_jax.experiments.slurm_task '
          'RUNS_JSON TASK_INDEX', file=sys.stderr)
    return 2
  with open(argv[1]) as f:
    entries = json.load(f)[int(argv[2])]
  jobs = [parallel.Job(e['run_dir'],
                       run_record.load(e['run_dir'] + '/config.json'),
                       needs=tuple(e['needs']), export_to=e['export_to'])
          for e in entries]
  for signum in (signal.SIGTERM, preemption.extra_stop_signal()):
    if signum is not None:
      signal.signal(signum, _forward)
  log = lambda line: print(line, flush=True)
  if len(jobs) == 1:
    status = parallel.run_jobs(jobs, 1, log=log)
  else:
    from adain_kd_jax.experiments import campaign_grid  # pylint: disable=g-import-not-at-top
    status = campaign_grid.run_jobs_as_grids(jobs, 1, log=log)
  for run_dir, value in status.items():
    print(f'{run_dir}: {value}', flush=True)
  done = all(j.finished for j in jobs)
  extra = preemption.extra_stop_signal()
  if not done and extra is not None and extra in _received:
    _requeue()  # SLURM ends this task; the requeued one resumes the runs.
  return 0 if done else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
