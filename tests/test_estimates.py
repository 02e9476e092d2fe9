"""A pending run's steps and estimated time (`campaign --list`)."""

import json
import textwrap

import pytest

from adain_kd_jax.experiments import estimates
from adain_kd_jax.training import run_record
from configs import default
from tests.conftest import run_python


def _config(**overrides):
  config = default.get_config()
  config.update(overrides)
  return config


def _finished(run_dir, config, *, steps, wall, device='cpu x1'):
  """A finished run: its config.json and a summary.json."""
  run_record.write(str(run_dir), config)
  summary = {'steps': steps, 'wall_seconds_total': wall}
  if device:
    summary['device'] = device
  (run_dir / 'summary.json').write_text(json.dumps(summary))


def test_train_steps_from_steps_or_epochs():
  """num_train_steps as given; else epochs x full batches of what the
  limit, the holdout and the per-class subset leave."""
  assert estimates.train_steps(_config(num_train_steps=77)) == 77
  config = _config(dataset='cifar100', num_train_steps=0, num_epochs=2.0,
                   batch_size=64, holdout=5000)
  assert estimates.train_steps(config) == 2 * (45_000 // 64)
  config.update(train_limit=10_000, holdout=1000, train_per_class=50)
  assert estimates.train_steps(config) == 2 * (5000 // 64)
  config.update(dataset='unknown_set')
  assert estimates.train_steps(config) is None


def test_estimate_from_the_median_speed_of_the_same_pair_and_device(
    tmp_path):
  """Seconds per image of finished runs of the pair (median), per device;
  another pair, or a summary that names no device, gives none."""
  pair = dict(dataset='cifar100', model='resnet8', teacher='resnet32x4',
              teacher_checkpoint='t', batch_size=64)
  dirs = []
  for k, (steps, wall, device) in enumerate([
      (100, 64.0, 'gpu x1'), (100, 128.0, 'gpu x1'), (100, 640.0, 'gpu x1'),
      (100, 6400.0, 'cpu x2'), (100, 1.0, '')]):
    dirs.append(tmp_path / f'r{k}')
    _finished(dirs[-1], _config(**pair, num_train_steps=steps), steps=steps,
              wall=wall, device=device)
  dirs.append(tmp_path / 'other')
  _finished(dirs[-1], _config(**dict(pair, model='resnet20'),
                              num_train_steps=100), steps=100, wall=1.0)
  known = estimates.speeds(str(d) for d in dirs + [tmp_path / 'absent'])
  pending = _config(**pair, num_train_steps=1000)
  times = estimates.estimates(pending, known)
  # Median of 0.01, 0.02, 0.1 s per image = 0.02; x 1000 steps x 64 images.
  assert times == {'gpu x1': pytest.approx(0.02 * 64_000),
                   'cpu x2': pytest.approx(1.0 * 64_000)}
  assert estimates.describe(pending, known) == (
      '1,000 steps, ~17.8 h on cpu x2, ~21 min on gpu x1')
  assert estimates.describe(_config(**dict(pair, model='wrn_16_2'),
                                    num_train_steps=5), known) == '5 steps'


def test_campaign_list_gives_pending_runs_steps_and_time(tmp_path):
  """campaign --list: each pending run's steps and estimate, then totals;
  a finished run shows neither."""
  plan = tmp_path / 'plan.py'
  plan.write_text(textwrap.dedent('''
      from adain_kd_jax.experiments.parallel import PlannedRun
      def get_plan(workdir=None):
        return [PlannedRun(f'kd/seed{s}', 'configs/smoke.py',
                           {'seed': s, 'num_train_steps': 10 * s})
                for s in (1, 2, 3)]
  '''))
  workdir = tmp_path / 'runs'
  from configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.update(seed=1, num_train_steps=10)
  # 10 steps in 5 s: 0.5 s a step on this device.
  _finished(workdir / 'kd/seed1', config, steps=10, wall=5.0)
  proc = run_python('-m', 'adain_kd_jax.experiments.campaign',
                    f'--plan={plan}', f'--workdir={workdir}', '--list')
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0].split() == ['finished', str(workdir / 'kd/seed1')]
  for line, steps, seconds in ((lines[1], 20, 10), (lines[2], 30, 15)):
    assert line.endswith(f'[{steps} steps, ~{seconds} s on cpu x1]'), line
  assert lines[3] == ('Pending: 2 run(s), 50 steps; ~25 s on cpu x1 for the '
                      '2 run(s) with a known speed.')
