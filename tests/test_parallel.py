"""Runs side by side: parallel.run_jobs, sweep --parallel and the campaign."""

import json
import os
import sys
import tarfile
import textwrap

import pytest

from adain_kd_jax.experiments import campaign
from adain_kd_jax.experiments import parallel
from configs import from_json
from configs import smoke
from tests.conftest import idx_smoke_flags
from tests.conftest import run_python

# A stand-in for train.py: sleeps, then writes summary.json (and an export
# for a teacher); 'fail' in the directory's name exits 3, 'ctrl_c' exits 130
# (train.py after Ctrl-C); SIGTERM exits 0 without a summary, as a preempted
# run does.
_FAKE_TRAIN = textwrap.dedent('''
    import json, os, signal, sys, time
    run_dir = sys.argv[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(os.path.join(run_dir, 'config.json')) as f:
      config = json.load(f)
    time.sleep(config.get('sleep', 0.2))
    name = os.path.basename(run_dir)
    if 'fail' in name:
      sys.exit(3)
    if 'ctrl_c' in name:
      sys.exit(130)  # As train.py after Ctrl-C: saved, no summary.
    os.makedirs(os.path.join(run_dir, 'export'), exist_ok=True)
    with open(os.path.join(run_dir, 'export', 'teacher.json'), 'w') as f:
      f.write('{}')
    with open(os.path.join(run_dir, 'summary.json'), 'w') as f:
      json.dump({'started': time.time()}, f)
''')


@pytest.fixture
def fake_train(monkeypatch):
  monkeypatch.setattr(parallel, 'train_command',
                      lambda d: [sys.executable, '-c', _FAKE_TRAIN, d])


def _job(tmp_path, name, sleep=0.2, **kwargs):
  config = smoke.get_config()
  config.unlock()
  config.sleep = sleep
  return parallel.Job(str(tmp_path / name), config, **kwargs)


def test_run_jobs_waits_for_needs_publishes_and_skips(tmp_path, fake_train):
  teacher_dest = str(tmp_path / 'teachers' / 't')
  jobs = [
      _job(tmp_path, 'student', needs=(teacher_dest,)),
      _job(tmp_path, 'teacher', sleep=0.5, export_to=teacher_dest),
      _job(tmp_path, 'fail'),
  ]
  status = parallel.run_jobs(jobs, 2, poll_s=0.05, log=lambda _: None)
  assert status == {jobs[0].run_dir: 'finished',
                    jobs[1].run_dir: 'finished',
                    jobs[2].run_dir: 'failed (exit 3)'}
  assert os.path.exists(os.path.join(teacher_dest, 'teacher.json'))
  # The student started only after the teacher was published.
  start = lambda j: parallel.read_summary(j.run_dir)['started']
  assert start(jobs[0]) > start(jobs[1])
  # Each job trained the config written to its directory.
  with open(os.path.join(jobs[0].run_dir, 'config.json')) as f:
    assert json.load(f)['model'] == 'resnet8'
  again = parallel.run_jobs(jobs[:2], 2, poll_s=0.05, log=lambda _: None)
  assert set(again.values()) == {'skipped'}


def test_run_jobs_budgets(tmp_path, fake_train):
  """Nothing starts after start_before_s; running jobs stop at stop_at_s."""
  jobs = [_job(tmp_path, 'long', sleep=30), _job(tmp_path, 'next'),
          _job(tmp_path, 'never', needs=(str(tmp_path / 'absent'),))]
  status = parallel.run_jobs(jobs, 1, start_before_s=0.5, stop_at_s=1.0,
                             poll_s=0.05, log=lambda _: None)
  assert status[jobs[0].run_dir] == 'stopped'
  assert status[jobs[1].run_dir] == 'not started'
  assert status[jobs[2].run_dir].startswith('waiting for ')
  with pytest.raises(ValueError, match='parallel=0'):
    parallel.run_jobs(jobs, 0)


def test_run_jobs_ctrl_c(tmp_path, fake_train, monkeypatch):
  """Ctrl-C: running jobs save and stop (exit 130), nothing more starts."""
  jobs = [_job(tmp_path, 'ctrl_c'), _job(tmp_path, 'runs_on'),
          _job(tmp_path, 'later')]
  real_sleep = parallel.time.sleep
  calls = []

  def sleep(seconds):
    calls.append(seconds)
    if len(calls) == 1:
      raise KeyboardInterrupt
    real_sleep(seconds)

  monkeypatch.setattr(parallel.time, 'sleep', sleep)
  status = parallel.run_jobs(jobs, 2, poll_s=0.05, log=lambda _: None)
  assert status == {jobs[0].run_dir: 'stopped',
                    jobs[1].run_dir: 'finished',
                    jobs[2].run_dir: 'not started'}


def test_child_env_shares_memory_unless_set(monkeypatch):
  monkeypatch.delenv(parallel.MEM_FRACTION_ENV, raising=False)
  assert parallel.child_env(10)[parallel.MEM_FRACTION_ENV] == '0.090'
  monkeypatch.setenv(parallel.MEM_FRACTION_ENV, '0.2')
  assert parallel.child_env(10)[parallel.MEM_FRACTION_ENV] == '0.2'


def test_from_json_round_trips_a_config(tmp_path):
  config = smoke.get_config()
  config.points = (2, 3)
  path = parallel.write_config(str(tmp_path / 'run'), config)
  back = from_json.get_config(path)
  assert back.to_dict() == config.to_dict()
  assert isinstance(back.points, tuple)
  with pytest.raises(ValueError, match='needs a path'):
    from_json.get_config('')


def _plan(tmp_path, teacher_dir):
  plan = tmp_path / 'plan.py'
  plan.write_text(textwrap.dedent(f'''
      from adain_kd_jax.experiments.parallel import PlannedRun
      def get_plan(workdir=None):
        return [
            PlannedRun('teacher/resnet8', 'configs/teacher.py',
                       {{'model': 'resnet8'}}, export_to={teacher_dir!r}),
            PlannedRun('kd/seed3', 'configs/fashion_mnist_distill.py:'
                       'teacher=resnet8,student=resnet8,method=kd',
                       {{'seed': 3, 'loss.temperature': 2.0}},
                       needs=({teacher_dir!r},)),
        ]
  '''))
  return str(plan)


def test_campaign_builds_jobs_with_overrides_sets_and_toy(tmp_path):
  runs = campaign._load_module(_plan(tmp_path, 'teachers/x')).get_plan(
      str(tmp_path))  # pylint: disable=protected-access
  workdir = str(tmp_path / 'runs')
  jobs = campaign.build_jobs(runs, workdir, {'steps_per_call': 4})
  kd = jobs[1].config
  assert (kd.method, kd.seed, kd.loss.temperature, kd.steps_per_call) == (
      'kd', 3, 2.0, 4)
  assert (kd.loss.ce, kd.loss.kd, kd.holdout) == (0.1, 0.9, 5000)
  assert jobs[1].needs == ('teachers/x',)
  assert jobs[0].export_to == 'teachers/x'
  assert jobs[1].run_dir == os.path.join(workdir, 'kd/seed3')
  toy = campaign.build_jobs(runs, workdir, {}, toy=True)
  # Toy teachers never land in the repository.
  assert toy[0].export_to == os.path.join(workdir, 'toy', 'teachers/x')
  assert toy[1].needs == (toy[0].export_to,)
  assert toy[1].config.teacher_checkpoint == os.path.abspath(
      os.path.join(workdir, 'toy', 'teachers/fashion_mnist_resnet8'))
  assert (toy[1].config.num_train_steps, toy[1].config.holdout) == (6, 128)
  with pytest.raises(KeyError, match="'loss.tmperature'"):
    campaign.set_field(kd, 'loss.tmperature', 1.0)
  assert campaign.parse_sets(['a=True', 'b.c=0.5', 'd=abc']) == {
      'a': True, 'b.c': 0.5, 'd': 'abc'}


def test_campaign_runs_the_plan_and_archives_results(tmp_path, fake_train):
  teacher_dir = str(tmp_path / 'teachers' / 'resnet8')
  runs = campaign._load_module(_plan(tmp_path, teacher_dir)).get_plan(
      str(tmp_path))  # pylint: disable=protected-access
  jobs = campaign.build_jobs(runs, str(tmp_path / 'runs'), {})
  status = parallel.run_jobs(jobs, 2, poll_s=0.05, log=lambda _: None)
  assert set(status.values()) == {'finished'}
  archive = str(tmp_path / 'chunk.tar.gz')
  assert campaign.write_archive(archive, jobs) == 7  # 3 + 3 files, 1 dir.
  with tarfile.open(archive) as tar:
    names = tar.getnames()
  assert any(n.endswith('kd/seed3/summary.json') for n in names)
  assert any(n.endswith('teachers/resnet8/teacher.json') for n in names)
  assert not any('checkpoints' in n for n in names)


def test_sweep_parallel_matches_sequential(tmp_path, idx_data_dir,
                                           teacher_export):
  """Two tiny runs at once give the summaries of one after the other."""
  flags = idx_smoke_flags(idx_data_dir, teacher_export) + [
      '--methods=none,kd', '--seeds=0', '--config.num_train_steps=4']
  results = {}
  for n in (1, 2):
    workdir = str(tmp_path / f'p{n}')
    proc = run_python('-m', 'adain_kd_jax.experiments.sweep', *flags,
                      f'--workdir={workdir}', f'--parallel={n}', timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[n] = {}
    for method in ('none', 'kd'):
      with open(os.path.join(workdir, method, 'seed0', 'summary.json')) as f:
        summary = json.load(f)
      for key in ('wall_seconds', 'wall_seconds_total', 'images_per_sec'):
        summary.pop(key)
      results[n][method] = summary
      with open(os.path.join(workdir, method, 'seed0', 'metrics.jsonl')) as f:
        results[n][method]['metrics'] = [
            {k: v for k, v in json.loads(l).items() if k != 'images_per_sec'}
            for l in f]
  assert results[1] == results[2]
  assert results[1]['kd']['metrics'][-1]['step'] == 4


def test_best_on_val_chooses_on_validation_only(tmp_path):
  def run(name, val, test):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / 'summary.json').write_text(json.dumps(
        {'val_accuracy': val, 'test_accuracy': test}))
    return str(d)

  settings = {'a': [run('a0', 0.90, 0.99), run('a1', 0.92, 0.99)],
              'b': [run('b0', 0.93, 0.10), run('b1', 0.91, 0.10)],
              'c': [run('c0', 0.80, 1.00)]}
  # Means on val: a 0.91, b 0.92, c 0.80; test plays no part.
  assert campaign.best_on_val(settings) == 'b'
  settings['d'] = [str(tmp_path / 'unfinished')]
  assert campaign.best_on_val(settings) is None
