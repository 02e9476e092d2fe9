"""On a real SLURM (scripts/slurm_local.sh): claims under array tasks.

The cluster is the one-node cluster of scripts/slurm_local.sh, started here if
no cluster answers; the tests skip, saying why, only where it cannot start
(not root, no apt-get, no package). One started here serves every pytest-xdist
worker and is stopped when the whole session ends (conftest.py), not when one
worker's tests end.
"""

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from tests import test_multihost
from tests.conftest import ROOT
from tests.conftest import SLURM_START_LOCK
from tests.conftest import SLURM_STARTED_MARK
from tests.conftest import run_train_py

_SCRIPT = os.path.join(ROOT, 'scripts', 'slurm_local.sh')


def _script(command):
  return subprocess.run([_SCRIPT, command], capture_output=True, text=True,
                        timeout=600, check=False)


@pytest.fixture(scope='module')
def slurm():
  """A SLURM cluster that answers; skips, with the reason, if none can.

  Workers take a lock to start it, so that two never start two clusters;
  the mark tells the session's end to stop it (conftest.py)."""
  with open(SLURM_START_LOCK, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if _script('status').returncode != 0:
      proc = _script('start')
      if proc.returncode != 0:
        pytest.skip('no local SLURM cluster: '
                    + (proc.stderr.strip() or proc.stdout.strip()))
      with open(SLURM_STARTED_MARK, 'w') as mark:
        mark.write(str(os.getpid()))
  yield


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


# One array task (of two): takes the run's claim (or is refused), holds it
# until the other task has tried (up to 120 s: on a busy node the two may
# run one after the other), and writes what happened and the claim's record
# to out/<task>.json.
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
      other = os.path.join(out, ('1' if task == '0' else '0') + '.json')
      end = time.time() + 120
      while not os.path.exists(other) and time.time() < end:
        time.sleep(0.2)
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


def _toy_plan(tmp_path, idx_data_dir):
  """A teacher, then kd and dkd x seeds 1 and 2 distilled from it."""
  teacher = str(tmp_path / 'teachers' / 'resnet8')
  common = {'data_source': 'idx', 'data_dir': idx_data_dir,
            'train_limit': 0, 'test_limit': 0, 'batch_size': 16,
            'eval_batch_size': 32, 'num_train_steps': 4,
            'log_every_steps': 2, 'checkpoint_every_steps': 2,
            'eval_every_epochs': 100.0, 'dataset': 'fashion_mnist',
            'holdout': 0, 'compare_to': ''}
  plan = tmp_path / 'plan.py'
  plan.write_text(textwrap.dedent(f'''
      from adain_kd_jax.experiments.parallel import PlannedRun
      COMMON = {common!r}
      def get_plan(workdir=None):
        runs = [PlannedRun('teacher', 'configs/teacher.py',
                           dict(COMMON, model='resnet8'),
                           export_to={teacher!r})]
        for method in ('kd', 'dkd'):
          for seed in (1, 2):
            runs.append(PlannedRun(
                f'{{method}}/seed{{seed}}', 'configs/default.py',
                dict(COMMON, model='resnet8', teacher='resnet8',
                     teacher_checkpoint={teacher!r}, method=method,
                     seed=seed), needs=({teacher!r},)))
        return runs
  '''))
  return str(plan)


def _campaign(plan, workdir, *flags_):
  return subprocess.run(
      [sys.executable, '-m', 'adain_kd_jax.experiments.campaign',
       f'--plan={plan}', f'--workdir={workdir}', *flags_], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=300, check=False)


@pytest.mark.parametrize('grid', [False, True], ids=['arrays', 'grid'])
def test_toy_plan_on_slurm_trains_every_run_once(slurm, tmp_path,
                                                 idx_data_dir, grid):
  """campaign --slurm: the teacher first, its dependants after it (arrays or
  grid packs); every run trained once; submitting again submits nothing."""
  del slurm
  plan, workdir = _toy_plan(tmp_path, idx_data_dir), tmp_path / 'runs'
  flags_ = ['--slurm=--time=00:20:00', '--slurm_throttle=2'] + (
      ['--grid'] if grid else [])
  proc = _campaign(plan, workdir, *flags_)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'Campaign: 5 runs: 5 submitted' in proc.stdout, proc.stdout
  [script] = [p.read_text() for p in (workdir / 'slurm').glob(
      'dependants-*.sbatch')]
  assert '#SBATCH --dependency=afterok:' in script
  assert '#SBATCH --array=0-%d%%2' % (0 if grid else 3) in script
  listed = _campaign(plan, workdir, '--list')
  assert re.search(r'(queued|running) under job \d+_0', listed.stdout), \
      listed.stdout
  again = _campaign(plan, workdir, *flags_)  # Nothing new to submit.
  assert 'submitted' not in again.stdout, again.stdout
  for job in set(re.findall(r' under job (\d+)_', listed.stdout)):
    _wait(job)
  listed = _campaign(plan, workdir, '--list')
  assert listed.stdout.count('  finished') == 5, listed.stdout
  for run in ('teacher', 'kd/seed1', 'kd/seed2', 'dkd/seed1', 'dkd/seed2'):
    with open(workdir / run / 'metrics.jsonl') as f:
      steps = [json.loads(l)['step'] for l in f
               if json.loads(l)['split'] == 'train']
    assert steps == [2, 4], (run, steps)  # Trained once.
    assert not (workdir / run / 'claim.json').exists()
  # The table of what SLURM trained, as docs/cluster.md ends the toy plan.
  report = subprocess.run(
      [sys.executable, '-m', 'adain_kd_jax.experiments.report',
       str(workdir)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      capture_output=True, text=True, timeout=300, check=False)
  assert report.returncode == 0, report.stderr[-3000:]
  for method in ('kd', 'dkd'):
    assert re.search(rf'^\| {method} \| 2 \|', report.stdout, re.M), \
        report.stdout


def _one_run_plan(tmp_path, idx_data_dir, teacher_export, steps):
  """A plan of one kd run distilled from `teacher_export`."""
  settings = {'data_source': 'idx', 'data_dir': idx_data_dir,
              'train_limit': 0, 'test_limit': 0, 'batch_size': 16,
              'eval_batch_size': 32, 'num_train_steps': steps,
              'log_every_steps': 3, 'checkpoint_every_steps': 3,
              'eval_every_epochs': 100.0, 'dataset': 'fashion_mnist',
              'holdout': 0, 'compare_to': '', 'model': 'resnet8',
              'teacher': 'resnet8', 'teacher_checkpoint': teacher_export,
              'method': 'kd'}
  plan = tmp_path / 'plan.py'
  plan.write_text(textwrap.dedent(f'''
      from adain_kd_jax.experiments.parallel import PlannedRun
      def get_plan(workdir=None):
        return [PlannedRun('kd', 'configs/default.py', {settings!r})]
  '''))
  return str(plan)


def _train_records(run_dir):
  """metrics.jsonl without its timing field."""
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for r in records:
    r.pop('images_per_sec', None)
  return records


def _wait_until_requeued(task, timeout=240):
  """Waits until SLURM lists `task` pending again after its requeue. It then
  starts by itself once SLURM's hold ends (about two minutes): releasing it
  at once (StartTime=now) raced the node's clean-up of the previous
  instance on a loaded machine ('Duplicate jobid', the node drained)."""
  end = time.time() + timeout
  while True:
    state = subprocess.run(['squeue', '-h', '-j', task, '-o', '%T'],
                           capture_output=True, text=True,
                           check=False).stdout.split()
    if state[:1] == ['PENDING']:
      return
    assert state, f'{task} left the queue instead of being requeued'
    assert time.time() < end, f'{task} not requeued after {timeout} s'
    time.sleep(0.2)


def test_stop_signal_requeues_the_task_which_resumes_bit_for_bit(
    slurm, tmp_path, idx_data_dir, teacher_export):
  """scancel --signal=USR1 on a running task: the run saves and stops, the
  task requeues itself, and the requeued task ends with the metrics and
  summary of an uninterrupted run."""
  del slurm
  steps = 60
  plan = _one_run_plan(tmp_path, idx_data_dir, teacher_export, steps)
  workdir = tmp_path / 'runs'
  proc = _campaign(plan, workdir, '--slurm=--time=00:20:00')
  assert proc.returncode == 0, proc.stderr[-3000:]
  [script] = (workdir / 'slurm').glob('runs-*.sbatch')
  for line in ('#SBATCH --requeue', '#SBATCH --signal=USR1@120',
               '#SBATCH --open-mode=append'):
    assert line in script.read_text()
  run_dir = workdir / 'kd'
  task = json.loads((run_dir / 'slurm.json').read_text())['task']
  # The uninterrupted reference: the same config.json, trained here.
  reference = tmp_path / 'reference'
  reference.mkdir()
  (reference / 'config.json').write_text((run_dir / 'config.json').read_text())
  from adain_kd_jax.experiments import parallel  # pylint: disable=g-import-not-at-top
  ref = subprocess.Popen(parallel.train_command(str(reference)), cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
  end = time.time() + 240
  while not (run_dir / 'checkpoints' / '3').is_dir():
    assert time.time() < end, 'no checkpoint 3 after 240 s'
    time.sleep(0.05)
  subprocess.run(['scancel', '--signal=USR1', task], check=True)
  _wait_until_requeued(task)
  # The requeued task's end is the run's summary (on a loaded machine the
  # queue can list the job's requeued record late: wait for the run).
  end = time.time() + 420  # SLURM's hold, then the rest of the run.
  while not (run_dir / 'summary.json').exists():
    assert time.time() < end, subprocess.run(
        ['squeue', '-a', '-o', '%i %T %r'], capture_output=True,
        text=True, check=False).stdout
    time.sleep(0.5)
  _wait(task.split('_')[0])
  _, err = ref.communicate(timeout=300)
  assert ref.returncode == 0, err[-3000:]
  log = ''.join(p.read_text() for p in (workdir / 'slurm').glob('*.log'))
  saved = re.search(r'Preempted: saved step (\d+)', (run_dir / 'log.txt')
                    .read_text())
  assert saved and int(saved.group(1)) < steps, log
  assert 'requeue of job' in log and 'done' in log, log
  assert f'Resuming {run_dir} at step {saved.group(1)}.' in (
      run_dir / 'log.txt').read_text()
  assert _train_records(run_dir) == _train_records(reference)
  ours, theirs = (json.loads((d / 'summary.json').read_text())
                  for d in (run_dir, reference))
  for key in ('test_accuracy', 'best_accuracy', 'steps'):
    assert ours[key] == theirs[key], key
  assert not (run_dir / 'claim.json').exists()


def test_srun_two_tasks_are_one_run_like_two_devices(
    slurm, tmp_path, idx_data_dir, teacher_export):
  """`srun -n 2 python train.py` with no distributed flags: one two-process
  run (set up from SLURM's environment), equal to one process with two
  devices."""
  del slurm
  flags_ = test_multihost.train_flags(idx_data_dir, teacher_export)
  multi = tmp_path / 'multi'
  command = shlex.join([sys.executable, os.path.join(ROOT, 'train.py'),
                        f'--workdir={multi}', *flags_])
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)  # As run_train_py: train.py sets its own.
  proc = subprocess.run(
      ['sbatch', '--parsable', '--ntasks=2', f'--chdir={ROOT}',
       f'--output={tmp_path}/srun.log',
       f'--wrap=srun -n 2 {command}; echo "srun exit $?"'],
      capture_output=True, text=True, timeout=60, env=env, check=False)
  assert proc.returncode == 0, proc.stderr
  job = proc.stdout.strip().split(';')[0]
  single = str(tmp_path / 'single')
  done = run_train_py(single, *flags_[:-1], '--cpu_devices=2')
  assert done.returncode == 0, done.stderr[-3000:]
  _wait(job, timeout=300)
  log = (tmp_path / 'srun.log').read_text()
  assert (multi / 'summary.json').exists(), log[-3000:]
  # Both tasks ended well and process 0 alone printed the run's header: one
  # run (two separate ones would print two, or the second would find the
  # first's claim and exit 2).
  assert 'srun exit 0' in log, log[-3000:]
  assert log.count('[adain_kd] resnet8 on fashion_mnist') == 1, log[-3000:]
  test_multihost.assert_same_training(single, str(multi))
