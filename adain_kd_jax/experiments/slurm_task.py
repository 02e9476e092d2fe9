r"""One SLURM array task of a campaign (`campaign --slurm`, slurm.py).

  python -m adain_kd_jax.experiments.slurm_task WORKDIR/slurm/runs.runs.json \
      $SLURM_ARRAY_TASK_ID

Trains the runs of task K of the list (each run's config.json, written at
submission): one run as `parallel.run_jobs` trains it (claimed, a train.py
child, a teacher's export published), several as one grid
(campaign_grid.py). Exits 0 only if every run of the task is finished, so
that `--dependency=afterok` holds a teacher's dependants back otherwise.
SIGTERM (scancel) and the extra stop signal (preemption.py) are passed on to
the runs' processes, which save a checkpoint and stop; the next submission
resumes them.
"""

import json
import os
import signal
import sys

from adain_kd_jax.experiments import parallel
from adain_kd_jax.training import preemption
from adain_kd_jax.training import run_record


def _forward(signum, frame):
  """Passes a stop signal (scancel's SIGTERM, the time-limit warning) on to
  the runs' processes, which save and stop, instead of orphaning them."""
  del frame
  signal.signal(signum, signal.SIG_IGN)  # killpg reaches this process too.
  os.killpg(os.getpgid(0), signum)


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
  return 0 if all(j.finished for j in jobs) else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))
