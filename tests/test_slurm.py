"""On a real SLURM (scripts/slurm_local.sh): claims under array tasks.

The cluster is the one-node cluster of scripts/slurm_local.sh, started here if
no cluster answers (and stopped again at the end); the tests skip, saying
why, only where it cannot start (not root, no apt-get, no package).
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT

_SCRIPT = os.path.join(ROOT, 'scripts', 'slurm_local.sh')


def _script(command):
  return subprocess.run([_SCRIPT, command], capture_output=True, text=True,
                        timeout=600, check=False)


@pytest.fixture(scope='module')
def slurm():
  """A SLURM cluster that answers; skips, with the reason, if none can."""
  started = _script('status').returncode != 0
  if started:
    proc = _script('start')
    if proc.returncode != 0:
      pytest.skip('no local SLURM cluster: '
                  + (proc.stderr.strip() or proc.stdout.strip()))
  yield
  if started:
    _script('stop')


def _sbatch(*args):
  """Submits; returns the job id."""
  proc = subprocess.run(['sbatch', '--parsable', *args], capture_output=True,
                        text=True, timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.strip().split(';')[0]


def _wait(job, timeout=240):
  """Waits until SLURM no longer lists `job`."""
  end = time.time() + timeout
  while subprocess.run(['squeue', '-h', '-j', job], capture_output=True,
                       text=True, check=False).stdout.strip():
    assert time.time() < end, f'job {job} still queued after {timeout} s'
    time.sleep(0.5)


# One array task: takes the run's claim (or is refused), holds it a moment,
# and writes what happened and the claim's record to out/<task>.json.
_TASK = textwrap.dedent('''
    import json, os, sys, time
    from adain_kd_jax.training import claims
    run_dir, out = sys.argv[1], sys.argv[2]
    task = os.environ['SLURM_ARRAY_TASK_ID']
    try:
      claim = claims.acquire(run_dir)
    except claims.Claimed as e:
      result = {'claimed': False, 'message': str(e)}
    else:
      result = {'claimed': True, 'record': claims.read(run_dir)}
      time.sleep(5)
      claim.release()
    with open(os.path.join(out, task + '.json'), 'w') as f:
      json.dump(result, f)
''')


def test_array_tasks_claim_a_run_once_naming_their_job(slurm, tmp_path):
  """Two array tasks on one run: one claims it (the claim names its array
  job and task), the other is refused naming that job."""
  del slurm
  task = tmp_path / 'task.py'
  task.write_text(_TASK)
  run_dir, out = tmp_path / 'run', tmp_path / 'out'
  out.mkdir()
  job = _sbatch('--array=0-1', f'--chdir={ROOT}',
                f'--output={tmp_path}/%a.log',
                f'--export=ALL,PYTHONPATH={ROOT}',
                f'--wrap={sys.executable} {task} {run_dir} {out}')
  _wait(job)
  results = [json.loads((out / f'{i}.json').read_text()) for i in (0, 1)]
  winners = [i for i, r in enumerate(results) if r['claimed']]
  assert len(winners) == 1, results
  winner, loser = results[winners[0]], results[1 - winners[0]]
  assert winner['record']['slurm_job'] == f'{job}_{winners[0]}'
  assert f'(SLURM job {job}_{winners[0]})' in loser['message']
  assert not os.path.exists(run_dir / 'claim.json')
