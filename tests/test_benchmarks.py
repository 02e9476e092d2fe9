"""The benchmark scripts end to end on tiny inputs (their JSON keys)."""

import json
import os

from tests.conftest import ROOT
from tests.conftest import run_python


def _run_benchmark(script, tmp_path, *args):
  """Runs benchmarks/`script` with --out; checks stdout and the file agree."""
  out = tmp_path / 'out.json'
  proc = run_python(os.path.join(ROOT, 'benchmarks', script), *args,
                    f'--out={out}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = json.loads(proc.stdout)
  assert printed == json.loads(out.read_text())
  return printed


def test_step_throughput_prints_every_entry_and_the_ratios(tmp_path):
  printed = _run_benchmark(
      'step_throughput.py', tmp_path, '--teacher=resnet14',
      '--student=resnet8', '--batch_sizes=8', '--methods=none,kd,adain',
      '--points=2,3', '--steps=1', '--image_shape=8,8,3', '--num_classes=5',
      '--input_examples=64')
  assert printed['device']['count'] == 1
  assert '--xla_force_host_platform_device_count=1' in printed['xla_flags']
  result = printed['results']['8']
  for name in ('teacher_forward', 'student_step', 'kd', 'adain@2', 'adain@3',
               'input_pipeline', 'tail@2', 'tail@3'):
    assert result[name]['ms_per_step'] > 0, name
    assert result[name]['images_per_s'] > 0, name
  assert result['none']['same_as'] == 'student_step'
  for name in ('adain@2', 'adain@3'):
    ratios = result['ratios'][name]
    parts = (result['teacher_forward']['ms_per_step']
             + result['student_step']['ms_per_step']
             + result[f'tail@{name[-1]}']['ms_per_step'])
    assert abs(ratios['adain_over_parts']
               - result[name]['ms_per_step'] / parts) < 1e-9
    assert abs(ratios['adain_over_kd'] - result[name]['ms_per_step']
               / result['kd']['ms_per_step']) < 1e-9
  assert not printed.get('errors')


def test_grid_throughput_times_grids_against_their_members_solo(
    tmp_path, idx_data_dir):
  """The committed teacher export and mock Fashion-MNIST files, tiny: grids
  of 1 and 2 kd members and a mix, each against the same members solo."""
  printed = _run_benchmark(
      'grid_throughput.py', tmp_path, f'--data_dir={idx_data_dir}',
      '--kd_sizes=1,2', '--mix=none,kd',
      '--batch_size=16', '--train_limit=256', '--steps=1', '--warmup=0',
      '--crd_negatives=64')
  assert set(printed['grids']) == {'kd_x1', 'kd_x2', 'mix'}
  for name, grid in printed['grids'].items():
    assert grid['ms_per_step'] > 0 and grid['solo_ms'] > 0, name
    assert abs(grid['grid_over_solo']
               - grid['ms_per_step'] / grid['solo_ms']) < 1e-9, name


def test_conv_parts_times_three_parts_per_shape(tmp_path):
  printed = _run_benchmark('conv_parts.py', tmp_path, '--batch=2',
                           '--shapes=4x8,2x16', '--steps=2')
  assert set(printed['results']) == {'4x8', '2x16'}
  for shape, (size, channels) in (('4x8', (4, 8)), ('2x16', (2, 16))):
    entry = printed['results'][shape]
    assert entry['gflop_per_part'] == 2 * 2 * size * size * 9 * channels**2 / 1e9
    assert 'torch' not in entry
    for part in ('fwd', 'dx', 'dw'):
      timing = entry['jax'][part]
      assert 0 < timing['ms_min'] <= timing['ms']
      assert abs(timing['gflop_per_s']
                 - entry['gflop_per_part'] / timing['ms'] * 1000) < 1e-6


def test_step_throughput_times_each_method_as_the_cifar100_table_trains_it(
    tmp_path):
  printed = _run_benchmark(
      'step_throughput.py', tmp_path, '--teacher=resnet14',
      '--student=resnet8x4', '--batch_sizes=8', '--methods=kd,ab,fsp',
      '--recipe=cifar100', '--points=3', '--steps=1', '--rounds=2',
      '--image_shape=8,8,3', '--num_classes=5', '--input_examples=64')
  assert (printed['recipe'], printed['rounds']) == ('cifar100', 2)
  # FSP needs equal stage widths (16.. against 64..): refused, not timed.
  assert list(printed['refused']) == ['fsp']
  assert 'channel' in printed['refused']['fsp']
  assert printed['methods'] == ['kd', 'ab']
  result = printed['results']['8']
  assert 'fsp' not in result
  # AB's first phase and its distillation are two entries of one program.
  for name in ('student_step', 'kd', 'ab/first_phase', 'ab'):
    # Two rounds of one timed call each; the median is over both.
    times = result[name]['times_ms']
    assert len(times) == result[name]['steps'] == 2, name
    assert abs(result[name]['ms_per_step'] - sum(times) / 2) < 1e-9, name
    assert min(times) > 0, name
  assert len(result['teacher_forward']['times_ms']) == 1
  assert result['ab']['first_phase_steps'] > 0
  assert (result['ab/first_phase']['first_phase_steps']
          == result['ab']['first_phase_steps'])
  kd = result['kd']['ms_per_step']
  assert abs(result['over_kd']['none']
             - result['student_step']['ms_per_step'] / kd) < 1e-9
  for name in ('kd', 'ab/first_phase', 'ab'):
    assert abs(result['over_kd'][name] - result[name]['ms_per_step'] / kd
               ) < 1e-9, name
  assert not printed.get('errors')
