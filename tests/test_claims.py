"""A run is claimed by one trainer at a time (training/claims.py)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from adain_kd_jax import cli
from adain_kd_jax.training import claims
from tests.conftest import ROOT
from tests.conftest import idx_smoke_config
from tests.conftest import idx_smoke_flags
from tests.conftest import run_python
from tests.conftest import run_train_py


def _plant(run_dir, host='elsewhere', pid=1, age_s=0.0, token='planted'):
  """Writes a claim by another trainer, last refreshed `age_s` ago."""
  os.makedirs(run_dir, exist_ok=True)
  path = claims.path_of(run_dir)
  with open(path, 'w') as f:
    json.dump({'host': host, 'pid': pid, 'slurm_job': '77', 'token': token},
              f)
  then = time.time() - age_s
  os.utime(path, (then, then))


def _dead_pid():
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def test_claim_names_holder_and_is_released(tmp_path, monkeypatch):
  """The claim file names host, pid and SLURM job; release removes it."""
  monkeypatch.setenv('SLURM_JOB_ID', '1234')
  monkeypatch.delenv('SLURM_ARRAY_JOB_ID', raising=False)
  run_dir = str(tmp_path / 'run')
  claim = claims.acquire(run_dir)
  record = claims.read(run_dir)
  assert (record['host'], record['pid'], record['slurm_job']) == (
      socket.gethostname(), os.getpid(), '1234')
  claim.release()
  assert not os.path.exists(claims.path_of(run_dir))
  claims.acquire(run_dir).release()  # Free again.


def test_second_claim_is_refused_in_one_line(tmp_path):
  """A live claim: Claimed, one line naming pid, host and SLURM job."""
  run_dir = str(tmp_path / 'run')
  _plant(run_dir, age_s=5)
  with pytest.raises(claims.Claimed) as info:
    claims.acquire(run_dir, stale_s=60)
  text = str(info.value)
  assert '\n' not in text
  assert re.search(r'claimed by pid 1 on elsewhere \(SLURM job 77\), '
                   r'refreshed [56] s ago', text), text
  assert claims.read(run_dir)['token'] == 'planted'  # Untouched.
  assert claims.holder(run_dir, stale_s=60).startswith('pid 1 on elsewhere')


def test_stale_claim_is_taken_over(tmp_path):
  """A claim not refreshed for the stale time is taken over."""
  run_dir = str(tmp_path / 'run')
  _plant(run_dir, age_s=120)
  assert claims.holder(run_dir, stale_s=60) is None
  claim = claims.acquire(run_dir, stale_s=60)
  assert claims.read(run_dir)['pid'] == os.getpid()
  assert not [f for f in os.listdir(run_dir) if f != claims.CLAIM_FILE]
  claim.release()


def test_claim_of_a_dead_process_here_is_stale_at_once(tmp_path):
  """A fresh claim whose holder on this host is gone is taken over."""
  run_dir = str(tmp_path / 'run')
  _plant(run_dir, host=socket.gethostname(), pid=_dead_pid())
  claims.acquire(run_dir, stale_s=600).release()
  _plant(run_dir, host=socket.gethostname(), pid=os.getppid())
  with pytest.raises(claims.Claimed):  # Its holder is alive.
    claims.acquire(run_dir, stale_s=600)


def test_heartbeat_refreshes_and_a_lost_claim_is_left_alone(tmp_path):
  """The heartbeat keeps the claim fresh; once replaced it stops and its
  release leaves the new holder's claim."""
  run_dir = str(tmp_path / 'run')
  claim = claims.acquire(run_dir, heartbeat_s=0.05)
  old = time.time() - 100
  os.utime(claims.path_of(run_dir), (old, old))
  time.sleep(0.5)
  assert claims.read(run_dir)['age_s'] < 5
  _plant(run_dir, token='newer')
  time.sleep(0.5)
  assert claim.lost
  claim.release()
  assert claims.read(run_dir)['token'] == 'newer'


def test_a_child_adopts_the_claim_it_was_handed(tmp_path, monkeypatch):
  """With the claim's token in the environment the claim is adopted, not
  refused, and its release is left to the parent."""
  run_dir = str(tmp_path / 'run')
  parent = claims.acquire(run_dir)
  monkeypatch.setenv(claims.TOKEN_ENV, parent.record['token'])
  child = claims.acquire(run_dir)
  assert not child.owned
  child.release()
  assert claims.read(run_dir)['token'] == parent.record['token']
  parent.release()


def test_bad_stale_time_names_the_variable(monkeypatch):
  """A stale time that is no number names the variable and the fix."""
  monkeypatch.setenv(claims.STALE_ENV, 'ten')
  with pytest.raises(ValueError, match=r"ADAIN_KD_CLAIM_STALE_S='ten' is "
                     r'not a number of seconds; unset it'):
    claims.stale_after_s()


# A campaign's core (parallel.run_jobs) over 20 runs, each "trained" by a
# stand-in for train.py that checks it holds the claim handed to it and
# appends its run's name to trained.txt.
_CAMPAIGN = textwrap.dedent('''
    import os, sys
    from adain_kd_jax.experiments import parallel
    from configs import smoke
    workdir = sys.argv[1]
    fake = """
    import json, os, sys, time
    run_dir = sys.argv[1]
    with open(os.path.join(run_dir, 'claim.json')) as f:
      if json.load(f)['token'] != os.environ['ADAIN_KD_CLAIM_TOKEN']:
        sys.exit(4)
    time.sleep(0.3)
    with open(os.path.join(os.path.dirname(run_dir), 'trained.txt'), 'a') as f:
      f.write(os.path.basename(run_dir) + chr(10))
    with open(os.path.join(run_dir, 'summary.json'), 'w') as f:
      f.write('{}')
    """
    parallel.train_command = lambda d: [sys.executable, '-c', fake, d]
    jobs = [parallel.Job(os.path.join(workdir, f'run{i:02d}'),
                         smoke.get_config()) for i in range(20)]
    status = parallel.run_jobs(jobs, 2, poll_s=0.02, log=lambda _: None)
    for run_dir, s in status.items():
      print(os.path.basename(run_dir), s.split(' ')[0])
''')


def test_two_campaigns_on_one_workdir_train_each_run_once(tmp_path):
  """Two campaigns at once on one workdir: each of 20 runs trained once."""
  procs = [subprocess.Popen(
      [sys.executable, '-c', _CAMPAIGN, str(tmp_path)], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for proc, (_, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
  trained = (tmp_path / 'trained.txt').read_text().split()
  assert sorted(trained) == [f'run{i:02d}' for i in range(20)]
  statuses = [dict(line.split() for line in out.splitlines())
              for out, _ in outs]
  for i in range(20):
    both = sorted(s[f'run{i:02d}'] for s in statuses)
    assert both in (['claimed', 'finished'], ['finished', 'skipped']), both
  assert not list(tmp_path.glob('run*/claim.json*'))


def test_second_train_py_refuses_in_one_line(tmp_path, idx_data_dir,
                                             teacher_export):
  """Two train.py on one workdir: the second exits 2 with one line naming
  the first; the first trains on, then stops cleanly and releases."""
  workdir = str(tmp_path / 'run')
  flags_ = idx_smoke_flags(idx_data_dir, teacher_export,
                           num_train_steps=100000, log_every_steps=1,
                           checkpoint_every_steps=10)
  first = run_train_py(workdir, *flags_, wait=False)
  try:
    end = time.time() + 240
    saved = os.path.join(workdir, 'checkpoints', '10')
    while not os.path.isdir(saved):  # Training, and stoppable by SIGTERM.
      assert first.poll() is None, first.communicate()[1][-3000:]
      assert time.time() < end, 'the first run did not start training'
      time.sleep(0.1)
    second = run_train_py(workdir, *flags_)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == cli.EXIT_USAGE, second.stderr[-3000:]
    assert len(lines) == 1, second.stderr
    assert re.match(rf'train\.py: error: {re.escape(workdir)} is claimed by '
                    rf'pid {first.pid} on {re.escape(socket.gethostname())}, '
                    r'refreshed \d+ s ago', lines[0]), lines[0]
    assert first.poll() is None  # Still training.
  finally:
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=240)
  assert first.returncode == 0, err[-3000:]
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f
             if json.loads(line)['split'] == 'train']
  assert steps == list(range(1, len(steps) + 1))  # Logged once each.
  assert not os.path.exists(claims.path_of(workdir))
  assert os.listdir(os.path.join(workdir, 'checkpoints'))


def test_claims_module_imports_no_jax():
  """Campaigns read claims without importing JAX."""
  proc = run_python('-c', 'import sys; from adain_kd_jax.training import '
                    'claims; assert "jax" not in sys.modules')
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_campaign_list_shows_a_claimed_run(tmp_path):
  """campaign --list: a run with a live claim is 'claimed', by whom."""
  plan = tmp_path / 'plan.py'
  plan.write_text(textwrap.dedent('''
      from adain_kd_jax.experiments.parallel import PlannedRun
      def get_plan(workdir=None):
        return [PlannedRun(f'kd/seed{s}', 'configs/smoke.py', {'seed': s})
                for s in (1, 2)]
  '''))
  workdir = tmp_path / 'runs'
  _plant(str(workdir / 'kd/seed2'), age_s=3)
  proc = run_python('-m', 'adain_kd_jax.experiments.campaign',
                    f'--plan={plan}', f'--workdir={workdir}', '--list')
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0].split()[:2] == ['ready', str(workdir / 'kd/seed1')]
  assert re.match(rf' *claimed  {re.escape(str(workdir / "kd/seed2"))}  '
                  r'\(by pid 1 on elsewhere \(SLURM job 77\), refreshed '
                  r'\d+ s ago\)  \[', lines[1]), lines[1]


def test_grid_and_its_packs_leave_a_claimed_run_alone(tmp_path, idx_data_dir,
                                                      teacher_export):
  """campaign --grid packs leave a claimed run out; a grid member claimed
  elsewhere is reported and untouched while the others train."""
  from adain_kd_jax.experiments import campaign_grid
  from adain_kd_jax.experiments import parallel
  from adain_kd_jax.training import grid
  configs = [idx_smoke_config(idx_data_dir, teacher_export, seed=s,
                              num_train_steps=2, method='kd')
             for s in (0, 1)]
  dirs = [str(tmp_path / f'seed{s}') for s in (0, 1)]
  _plant(dirs[1], age_s=1)
  jobs = [parallel.Job(d, c) for d, c in zip(dirs, configs)]
  assert [[j.run_dir for j in p] for p in campaign_grid.pack(jobs)] == [
      dirs[:1]]
  results = grid.train_members(list(zip(configs, dirs)))
  assert 'test_accuracy' in results[dirs[0]], results
  assert results[dirs[1]]['claimed'].startswith(f'{dirs[1]} is claimed by '
                                                'pid 1 on elsewhere')
  assert os.listdir(dirs[1]) == [claims.CLAIM_FILE]
  assert claims.read(dirs[1])['token'] == 'planted'
  assert not os.path.exists(claims.path_of(dirs[0]))
