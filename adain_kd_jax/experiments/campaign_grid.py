"""A campaign's runs as grids (`campaign --grid`): a few programs, not
hundreds of processes.

Ready, unfinished runs that can share (the same teacher, student, data and
schedule: `grid.group_key`) train together in one grid in this process;
teacher runs (those that export) and runs waiting for a teacher train first,
as `parallel.run_jobs` trains them, then the grids. Each run is still an
ordinary run in its own directory (config.json, metrics, summary.json), so
the campaign's other commands (--list, --archive, report) see no difference.
A run claimed by another trainer (claims.py) is left out of the packs.
"""

from typing import Sequence

from adain_kd_jax.experiments import parallel
from adain_kd_jax.training import claims


def pack(jobs: Sequence[parallel.Job]) -> list[list[parallel.Job]]:
  """The ready, unfinished, non-exporting jobs, packed into grids."""
  from adain_kd_jax.training import grid
  packs = {}
  for job in jobs:
    if (job.finished or job.export_to or not job.ready()
        or claims.holder(job.run_dir)):  # Claimed: trained elsewhere.
      continue
    packs.setdefault(grid.group_key(job.config), []).append(job)
  return list(packs.values())


def run_jobs_as_grids(jobs: Sequence[parallel.Job], num_parallel: int,
                      log=print) -> dict[str, str]:
  """Trains the teachers (parallel.run_jobs), then every pack as a grid,
  until no job is ready; returns {run_dir: status}."""
  from adain_kd_jax.training import grid
  teachers = [j for j in jobs if j.export_to]
  status = parallel.run_jobs(teachers, num_parallel, log=log) if teachers \
      else {}
  while True:
    packs = pack(jobs)
    if not packs:
      break
    for members in packs:
      log(f'grid of {len(members)}: '
          + ', '.join(j.run_dir for j in members))
      for job in members:
        parallel.write_config(job.run_dir, job.config)
      out = grid.train_members([(j.config, j.run_dir) for j in members])
      for run_dir, value in out.items():
        if isinstance(value, dict) and 'preempted_at' in value:
          status[run_dir] = f'stopped at step {value["preempted_at"]}'
        elif isinstance(value, dict) and 'claimed' in value:
          status[run_dir] = f'claimed ({value["claimed"][:200]})'
        elif isinstance(value, dict) and 'failed' in value:
          status[run_dir] = f'failed ({value["failed"][:200]})'
        else:
          status[run_dir] = 'finished'
      if any(s.startswith(('stopped', 'failed')) for s in status.values()):
        return status
  for job in jobs:
    status.setdefault(job.run_dir, 'finished' if job.finished else
                      'waiting')
  return status
