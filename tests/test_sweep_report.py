"""sweep.py, report.py and plots.py on fake runs: no real training."""

import csv
import glob
import io
import json
import os

import jax
import numpy as np
import pytest

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import plots
from adain_kd_jax.experiments import report
from adain_kd_jax.experiments import stats_figures
from adain_kd_jax.experiments import sweep
from adain_kd_jax.experiments import tables
from adain_kd_jax.training import loop
from configs import default
from tests.conftest import make_teacher_variables
from tests.conftest import read_events

_PNG = b'\x89PNG\r\n\x1a\n'

# Test accuracy at epochs 1, 2, 3 of each fake run.
_CURVES = {
    'none': [[0.70, 0.81, 0.80], [0.72, 0.85, 0.82], [0.75, 0.78, 0.84]],
    'adain': [[0.80, 0.88, 0.87], [0.82, 0.86, 0.89], [0.81, 0.90, 0.85]],
    'kd': [[0.83, 0.855]],  # One seed.
}


def _write_run(directory, method, seed, curve, *, best_on='test', val=None):
  run = os.path.join(directory, method, f'seed{seed}')
  os.makedirs(run)
  records = []
  for i, acc in enumerate(curve):
    step = 10 * (i + 1)
    records.append({'step': step - 5, 'split': 'train', 'epoch': i + 0.5,
                    'loss': 2.0 - i, 'ce': 1.5 - i / 2, 'accuracy': acc - 0.1,
                    'images_per_sec': None if i == 0 else 1000.0 + i})
    records.append({'step': step, 'split': 'test', 'epoch': float(i + 1),
                    'accuracy': acc, 'loss': 1.0 - acc, 'count': 64})
    if val is not None:
      records.append({'step': step, 'split': 'val', 'epoch': float(i + 1),
                      'accuracy': val[i], 'loss': 0.5, 'count': 32})
  with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in records)
  chosen = curve if val is None else val
  best = int(np.argmax(chosen))
  summary = {
      'model': 'resnet8', 'method': method,
      'teacher': '' if method == 'none' else 'resnet20',
      'dataset': 'fashion_mnist', 'seed': seed, 'steps': 10 * len(curve),
      'epochs': float(len(curve)), 'test_accuracy': curve[-1],
      'best_accuracy': chosen[best], 'best_step': 10 * (best + 1),
      'best_on': best_on,
      'teacher_test_accuracy': None if method == 'none' else 0.9123,
      'skipped_steps': 0, 'images_per_sec': 1000.0 + 100 * seed,
      'wall_seconds': 60.0 * (seed + 1)}
  with open(os.path.join(run, 'summary.json'), 'w') as f:
    json.dump(summary, f)
  return run


@pytest.fixture
def sweep_dir(tmp_path):
  directory = str(tmp_path / 'sweep')
  for method, curves in _CURVES.items():
    for seed, curve in enumerate(curves):
      _write_run(directory, method, seed, curve)
  # An unfinished run (no summary.json) is left out.
  os.makedirs(os.path.join(directory, 'kd', 'seed1'))
  with open(os.path.join(directory, 'sweep.json'), 'w') as f:
    json.dump({'methods': ['none', 'kd', 'adain'], 'seeds': [0, 1, 2],
               'config': {}}, f)
  return directory


def test_aggregate_by_hand(sweep_dir):
  runs = finished_runs.collect(sweep_dir)
  assert [(r['method'], r['seed']) for r in runs] == [
      ('none', 0), ('none', 1), ('none', 2), ('kd', 0),
      ('adain', 0), ('adain', 1), ('adain', 2)]
  rows = {r['method']: r for r in tables.aggregate(runs)}
  none, adain, kd = rows['none'], rows['adain'], rows['kd']
  # none: last (0.80, 0.82, 0.84), best (0.81, 0.85, 0.84).
  assert none['n'] == 3 and none['seeds'] == [0, 1, 2]
  assert none['last_mean'] == pytest.approx(0.82)
  assert none['last_std'] == pytest.approx(0.02)
  assert none['best_mean'] == pytest.approx(2.5 / 3)
  assert none['best_std'] == pytest.approx(
      np.sqrt(((0.81 - 2.5 / 3) ** 2 + (0.85 - 2.5 / 3) ** 2
               + (0.84 - 2.5 / 3) ** 2) / 2))
  assert none['teacher_accuracy'] is None
  assert none['images_per_sec'] == pytest.approx(1100.0)
  assert none['wall_minutes'] == pytest.approx(2.0)
  # adain: last (0.87, 0.89, 0.85), best (0.88, 0.89, 0.90).
  assert adain['last_mean'] == pytest.approx(0.87)
  assert adain['last_std'] == pytest.approx(0.02)
  assert adain['best_mean'] == pytest.approx(0.89)
  assert adain['best_std'] == pytest.approx(0.01)
  assert adain['teacher_accuracy'] == pytest.approx(0.9123)
  # kd: one seed, no std.
  assert kd['n'] == 1 and kd['last_std'] is None and kd['best_std'] is None
  assert kd['last_mean'] == pytest.approx(0.855)
  assert kd['best_mean'] == pytest.approx(0.855)

  md = tables.to_markdown(list(rows.values()))
  assert 'chosen on test' in md
  assert ('| none | 3 | 82.00 ± 2.00 | 83.33 ± 2.08 | - | 1100.00 | '
          '2.00 |') in md
  assert ('| adain | 3 | 87.00 ± 2.00 | 89.00 ± 1.00 | 91.23 | 1100.00 | '
          '2.00 |') in md
  assert '| kd | 1 | 85.50 ± - | 85.50 ± - | 91.23 | 1000.00 | 1.00 |' in md

  table = list(csv.DictReader(io.StringIO(tables.to_csv(
      tables.aggregate(runs)))))
  assert [r['method'] for r in table] == ['none', 'kd', 'adain']
  assert table[0]['last_top1_mean'] == '82.00'
  assert table[0]['best_top1_std'] == '2.08'
  assert table[0]['teacher_top1'] == ''
  assert table[1]['last_top1_std'] == ''
  assert table[2]['best_top1_mean'] == '89.00'
  assert table[2]['best_chosen_on'] == 'test'
  assert table[2]['seeds'] == '0 1 2'


def test_paired_rows_by_hand(sweep_dir):
  """adain minus none per seed: last (7, 7, 1), best (7, 4, 6) points."""
  runs = finished_runs.collect(sweep_dir)
  rows = {r['method']: r for r in tables.paired_rows(runs, 'adain')}
  assert list(rows) == ['none', 'kd']
  last, best = rows['none']['last'], rows['none']['best']
  assert last['seeds'] == [0, 1, 2]
  assert last['diffs'] == pytest.approx([7.0, 7.0, 1.0])
  assert last['mean'] == pytest.approx(5.0)
  # t_{0.975, 2} = 4.3026527297; std of (7, 7, 1) = sqrt 12.
  half = 4.3026527297 * np.sqrt(12.0) / np.sqrt(3.0)
  assert (last['ci_low'], last['ci_high']) == pytest.approx(
      (5.0 - half, 5.0 + half))
  assert best['diffs'] == pytest.approx([7.0, 4.0, 6.0])
  # kd has one seed (0): one difference, no interval.
  assert rows['kd']['last']['diffs'] == pytest.approx([87.0 - 85.5])
  assert rows['kd']['last']['ci_low'] is None
  md = tables.paired_markdown('adain', list(rows.values()))
  assert '| none | 3 | +5.00 [' in md and '+7.00 +7.00 +1.00 |' in md
  assert 'adain and none are not distinguishable' in md
  assert tables.paired_rows(runs, 'crd') == []


def test_holm_within_a_table_times_the_number_of_tables(sweep_dir):
  """adain minus none: last (7, 7, 1) gives t = 2.5 on 2 degrees of freedom,
  p = 1 - 2.5 / sqrt(8.25) = 0.1296; best (7, 4, 6) gives t = 17 / sqrt(7),
  p = 1 - 17 / sqrt(303) = 0.0234. Holm over the table's two p-values (kd has
  one seed, no p): 2 x 0.0234 for the best epoch, max(2 x 0.0234, 0.1296)
  for the last; with two tables, each adjusted p-value doubles."""
  runs = finished_runs.collect(sweep_dir)
  rows = tables.paired_rows(runs, 'adain')
  p_last = 1 - 2.5 / np.sqrt(8.25)
  p_best = 1 - 17 / np.sqrt(303)
  one = {r['method']: r for r in tables.holm_adjusted(rows)}
  two = {r['method']: r for r in tables.holm_adjusted(rows, families=2)}
  assert one['none']['p_last'] == pytest.approx(p_last)
  assert one['none']['holm_last'] == pytest.approx(p_last)
  assert two['none']['holm_last'] == pytest.approx(2 * p_last)
  assert one['none']['p_best'] == pytest.approx(p_best)
  assert one['none']['holm_best'] == pytest.approx(2 * p_best)
  assert two['none']['holm_best'] == pytest.approx(4 * p_best)
  assert one['kd']['holm_last'] is None and two['kd']['holm_last'] is None
  # A factor never lifts a p-value above 1.
  assert tables.holm_adjusted(rows, families=100)[0]['holm_last'] == 1.0
  md = tables.paired_markdown('adain', rows, families=2)
  assert '| adain minus | n | last epoch, mean [95% CI] | Holm x 2 p' in md
  assert f'Holm x 2-adjusted p={2 * p_last:.3g}' in md


def test_report_gives_one_table_per_reference(sweep_dir):
  report.make_report(sweep_dir, stats=False, tensorboard=False,
                     paired_with=('adain', 'none', 'dkd'))
  with open(os.path.join(sweep_dir, 'report.md')) as f:
    md = f.read()
  # dkd has no run: two tables, each corrected for both.
  assert '## adain against each method, paired by seed' in md
  assert '## none against each method, paired by seed' in md
  assert '## dkd' not in md
  assert md.count('times 2 (Bonferroni across the 2 tables') == 2
  assert '| none | 3 | +5.00 [' in md and '| adain | 3 | -5.00 [' in md


def test_report_header_names_the_directory_as_given(sweep_dir,
                                                   monkeypatch):
  """A report names its directory as the command gave it, never the
  absolute path of the machine that wrote it."""
  monkeypatch.chdir(os.path.dirname(sweep_dir))
  given = os.path.join('.', os.path.basename(sweep_dir), '')
  report.make_report(given, stats=False, tensorboard=False,
                     paired_with=('adain',))
  with open(os.path.join(sweep_dir, 'report.md')) as f:
    first = f.readline()
  assert first == f'# Sweep report: {os.path.basename(sweep_dir)}\n', first


def test_report_of_chosen_methods_keeps_its_family(sweep_dir):
  """--rows: the other methods' runs leave the tables, the CSV and the
  Holm family; --name writes beside report.md instead of over it."""
  report.make_report(sweep_dir, stats=False, tensorboard=False,
                     paired_with=('adain',))
  report.make_report(sweep_dir, stats=False, tensorboard=False,
                     paired_with=('adain',), methods=('adain', 'none'),
                     name='report_pair')
  with open(os.path.join(sweep_dir, 'report_pair.md')) as f:
    md = f.read()
  with open(os.path.join(sweep_dir, 'report.md')) as f:
    full = f.read()
  assert '| kd |' in full and '| kd |' not in md
  assert '| none | 3 | +5.00 [' in md
  # The family is the table's 2 comparisons (none: last and best), so the
  # last epoch's p is Holm's max(2 x p_best, p_last) = p_last, unchanged.
  p_last = 1 - 2.5 / np.sqrt(8.25)
  assert f'Holm-adjusted p={p_last:.3g}' in md
  assert 'over the 2 comparisons of this table' in md
  with open(os.path.join(sweep_dir, 'report_pair.csv')) as f:
    assert [r['method'] for r in csv.DictReader(f)] == ['none', 'adain']
  with open(os.path.join(sweep_dir, 'report_pair_accuracy_curves.png'),
            'rb') as f:
    assert f.read(8) == _PNG


def test_report_names_a_missing_method_and_a_bad_name(sweep_dir):
  with pytest.raises(report.ReportInputError,
                     match=r'--rows: no finished run of dkd; the methods '
                           r'with finished runs are none, kd, adain'):
    report.make_report(sweep_dir, stats=False, tensorboard=False,
                       methods=('adain', 'dkd'))
  with pytest.raises(report.ReportInputError, match='--name'):
    report.make_report(sweep_dir, stats=False, tensorboard=False,
                       name='sub/report')
  assert not os.path.exists(os.path.join(sweep_dir, 'report.md'))


def test_report_rows_are_directories(tmp_path):
  """A tuning directory: rows are its settings, all of one method."""
  directory = str(tmp_path)
  _write_run(directory, 'w0.1', 0, [0.8, 0.85])
  _write_run(directory, 'w0.3', 0, [0.8, 0.87])
  rows = tables.aggregate(finished_runs.collect(directory))
  assert [r['method'] for r in rows] == ['w0.1', 'w0.3']


def test_best_chosen_on_val_reports_test_accuracy_there(tmp_path):
  directory = str(tmp_path)
  _write_run(directory, 'adain', 0, [0.80, 0.85, 0.83], best_on='val',
             val=[0.7, 0.75, 0.9])  # Best on val: epoch 3, test 0.83.
  with open(os.path.join(directory, 'adain', 'seed0', 'summary.json')) as f:
    summary = json.load(f)
  summary['val_accuracy'] = 0.9
  with open(os.path.join(directory, 'adain', 'seed0', 'summary.json'),
            'w') as f:
    json.dump(summary, f)
  rows = tables.aggregate(finished_runs.collect(directory))
  assert rows[0]['best_mean'] == pytest.approx(0.83)
  assert rows[0]['best_on'] == 'val'
  assert rows[0]['val_mean'] == pytest.approx(0.9)
  md = tables.to_markdown(rows)
  assert 'chosen on val' in md
  assert '| adain | 1 | 90.00 ± - | 83.00 ± - |' in md
  assert list(csv.DictReader(io.StringIO(tables.to_csv(rows))))[0][
      'val_top1_mean'] == '90.00'


def test_make_report_writes_everything(sweep_dir):
  table = report.make_report(sweep_dir)
  assert '| adain | 3 | 87.00 ± 2.00 |' in table
  with open(os.path.join(sweep_dir, 'report.md')) as f:
    md = f.read()
  assert '| adain | 3 | 87.00 ± 2.00 |' in md
  assert 'accuracy_curves.png' in md
  assert '## adain against each method, paired by seed' in md
  assert '| none | 3 | +5.00 [' in md
  with open(os.path.join(sweep_dir, 'report.csv')) as f:
    assert len(list(csv.DictReader(f))) == 3
  with open(os.path.join(sweep_dir, 'accuracy_curves.png'), 'rb') as f:
    assert f.read(8) == _PNG
  # No checkpoints in the fake runs: no statistics plot, and no error.
  assert not glob.glob(os.path.join(sweep_dir, 'stats_scatter_*.png'))
  assert len(glob.glob(os.path.join(sweep_dir, '*', 'seed*', 'tb',
                                    'events.out.tfevents.*'))) == 7


def test_committed_stats_cache_stands_in_for_checkpoints(sweep_dir):
  """Only seed 1 of adain has statistics (a cache, no checkpoints): its
  scatter is drawn from them; a summary.json trained again voids them."""
  stats = {'point': 'stage2', 'step': 30,
           **{k: {'mean': np.arange(4.0) + i, 'std': np.ones(4) * (i + 1)}
              for i, k in enumerate(('teacher', 'before', 'after'))}}
  runs = finished_runs.collect(sweep_dir)
  seed1 = os.path.join(sweep_dir, 'adain', 'seed1')
  assert stats_figures.scatter_run(runs, 'adain')['seed'] == 0
  stats_figures.save_stats(seed1, stats)
  assert stats_figures.scatter_run(runs, 'adain')['seed'] == 1
  got = stats_figures.cached_stats(seed1)
  assert got['point'] == 'stage2' and got['step'] == 30
  np.testing.assert_array_equal(got['after']['mean'], np.arange(4.0) + 2)
  report.make_report(sweep_dir, tensorboard=False)
  with open(os.path.join(sweep_dir, 'stats_scatter_adain.png'), 'rb') as f:
    assert f.read(8) == _PNG
  assert not os.path.exists(os.path.join(sweep_dir, 'stats_scatter_none.png'))
  with open(os.path.join(seed1, 'summary.json'), 'a') as f:
    f.write('\n')
  assert stats_figures.cached_stats(seed1) is None
  assert stats_figures.scatter_run(runs, 'adain')['seed'] == 0


def test_plots_write_png(sweep_dir, tmp_path):
  path = str(tmp_path / 'curves.png')
  plots.accuracy_curves(finished_runs.collect(sweep_dir), path)
  rng = np.random.default_rng(0)
  stats = lambda: {'mean': rng.normal(size=16), 'std': rng.uniform(size=16)}
  scatter = str(tmp_path / 'scatter.png')
  plots.stats_scatter(stats(), stats(), stats(), scatter, title='adain')
  for p in (path, scatter):
    assert os.path.getsize(p) > 1000
    with open(p, 'rb') as f:
      assert f.read(8) == _PNG


def test_tensorboard_event_files(sweep_dir):
  run = os.path.join(sweep_dir, 'none', 'seed1')
  for _ in range(2):  # Writing again replaces the old file.
    logdir = plots.write_tensorboard(run)
  files = glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))
  assert len(files) == 1
  scalars = read_events(files[0])
  assert [s for s, _ in scalars['test/accuracy']] == [10, 20, 30]
  np.testing.assert_allclose([v for _, v in scalars['test/accuracy']],
                             _CURVES['none'][1], rtol=1e-6)
  assert [s for s, _ in scalars['train/ce']] == [5, 15, 25]
  # None (the first images_per_sec) and 'count' are not scalars.
  assert len(scalars['train/images_per_sec']) == 2
  assert 'test/count' not in scalars and 'test/epoch' not in scalars
  assert plots.write_tensorboard(str(os.path.join(sweep_dir, 'kd',
                                                  'seed1'))) is None


def _config():
  config = default.get_config()
  config.num_train_steps = 2
  return config


def test_sweep_skips_finished_runs_and_trains_the_rest(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'sweep')
  for method, seed in (('none', 0), ('none', 1), ('adain', 0)):
    _write_run(workdir, method, seed, [0.5])
  calls = []

  def fake_train(config, directory):
    calls.append((config.method, config.seed, config.compare_to, directory))
    return {'test_accuracy': 0.5}

  monkeypatch.setattr(loop, 'train_and_evaluate', fake_train)
  results = sweep.train_cells_in_turn(_config(), ['none', 'adain'], [0, 1],
                                      workdir)
  assert calls == [('adain', 1, '', os.path.join(workdir, 'adain', 'seed1'))]
  assert results[('none', 0)] == 'skipped'
  assert results[('adain', 1)] == {'test_accuracy': 0.5}
  with open(os.path.join(workdir, 'sweep.json')) as f:
    record = json.load(f)
  assert record['methods'] == ['none', 'adain'] and record['seeds'] == [0, 1]
  assert record['config']['num_train_steps'] == 2
  with open(os.path.join(workdir, 'adain', 'seed1', 'config.json')) as f:
    assert json.load(f)['method'] == 'adain'

  # A second job of the same sweep adds its cell to sweep.json.
  sweep.train_cells_in_turn(_config(), ['kd'], [2], workdir)
  with open(os.path.join(workdir, 'sweep.json')) as f:
    record = json.load(f)
  assert record['methods'] == ['none', 'adain', 'kd']
  assert record['seeds'] == [0, 1, 2]


def test_sweep_stops_when_preempted_and_checks_configs_first(tmp_path,
                                                            monkeypatch):
  calls = []

  def fake_train(config, directory):
    calls.append(directory)
    return {'preempted_at': 1}

  monkeypatch.setattr(loop, 'train_and_evaluate', fake_train)
  results = sweep.train_cells_in_turn(_config(), ['kd', 'adain'], [0],
                                      str(tmp_path / 'a'))
  assert len(calls) == 1 and ('adain', 0) not in results
  with pytest.raises(ValueError, match='Unknown method'):
    sweep.train_cells_in_turn(_config(), ['kd', 'adian'], [0],
                              str(tmp_path / 'b'))
  assert len(calls) == 1


def test_insertion_point_stats(tmp_path, teacher_export, idx_data_dir):
  """Stats from the init state and a saved checkpoint (no training).

  The saved state is the run's initial one with the connector's BatchNorm
  bias raised by 1: every channel mean moves by 1, the stds stay.
  """
  from adain_kd_jax import losses
  from adain_kd_jax.data import augment  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import checkpoints
  from adain_kd_jax.training import run as run_lib
  config = _config()
  config.update(data_dir=idx_data_dir, batch_size=16, eval_batch_size=32)
  config.teacher = 'resnet8'
  config.teacher_checkpoint = teacher_export
  config.method = 'adain'
  config.points = (-1,)  # S-1 = stage 2 of resnet8.
  config.seed = 3
  images = np.random.default_rng(0).integers(
      0, 256, (8, 28, 28, 1)).astype(np.uint8)
  run = run_lib.create_run(config, None)
  run.close()
  state = run.state
  params = jax.tree.map(lambda x: x, state.params)
  bn = params['connector']['stage2']['bn']
  bn['bias'] = bn['bias'] + 1.0
  ckpt = checkpoints.RunCheckpointer(str(tmp_path / 'checkpoints'), keep=2)
  ckpt.save(7, state.replace(step=state.step + 7, params=params), {})
  ckpt.wait()
  ckpt.close()
  distiller = run.distiller

  stats = plots.insertion_point_stats(config, str(tmp_path), images)
  assert stats['point'] == 'stage2' and stats['step'] == 7
  for key in ('teacher', 'before', 'after'):
    assert stats[key]['mean'].shape == stats[key]['std'].shape == (32,)
  np.testing.assert_allclose(stats['after']['mean'],
                             stats['before']['mean'] + 1.0, atol=1e-4)
  np.testing.assert_allclose(stats['after']['std'], stats['before']['std'],
                             rtol=1e-4)
  x = augment.preprocess_eval(images, mean=(0.2860,), std=(0.3530,))
  _, feats = distiller.teacher.apply(make_teacher_variables(), x, train=False)
  mu, sigma = losses.channel_stats(feats['stage2'])
  np.testing.assert_allclose(stats['teacher']['mean'], mu.mean(0), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(stats['teacher']['std'], sigma.mean(0),
                             rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='no connector'):
    plots.insertion_point_stats(
        sweep.run_config(config, 'kd', 0), str(tmp_path), images)


def _single_run(tmp_path, curve_adain, curve_none):
  """A train.py workdir: the run in DIR, its comparison in DIR/compare_none."""
  fake = tmp_path / 'fake'
  _write_run(str(fake), 'adain', 0, curve_adain)
  _write_run(str(fake), 'none', 0, curve_none)
  workdir = tmp_path / 'run'
  os.rename(fake / 'adain' / 'seed0', workdir)
  os.rename(fake / 'none' / 'seed0', workdir / 'compare_none')
  return str(workdir)


def test_report_of_a_single_run_directory(tmp_path):
  """train.py's workdir (with its compare_none run) is a report of two rows."""
  workdir = _single_run(tmp_path, [0.80, 0.88], [0.70, 0.81])
  runs = finished_runs.collect(workdir)
  assert [(r['method'], r['seed']) for r in runs] == [('adain', 0),
                                                      ('none', 0)]
  table = report.make_report(workdir, stats=False, tensorboard=False)
  assert '| adain |' in table and '| none |' in table
  with open(os.path.join(workdir, 'accuracy_curves.png'), 'rb') as f:
    assert f.read(8) == _PNG


def test_report_names_both_kinds_of_directory(tmp_path):
  """No run at all: the error says what a sweep and a run directory hold."""
  with pytest.raises(FileNotFoundError, match='sweep directory.*run directory'):
    report.make_report(str(tmp_path), stats=False, tensorboard=False)


def test_one_evaluation_figure_is_bars_with_values(tmp_path, monkeypatch):
  """One evaluation per run: a bar per method, labelled with its value, not
  a lone dot per method."""
  workdir = _single_run(tmp_path, [0.8234], [0.7012])
  drawn = {}
  monkeypatch.setattr(plots, '_final_accuracy_bars',
                      lambda runs, methods, path: drawn.update(
                          methods=methods, path=path))
  plots.accuracy_curves(finished_runs.collect(workdir), str(tmp_path / 'a.png'))
  assert drawn['methods'] == ['adain', 'none']
  monkeypatch.undo()
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  texts = []
  monkeypatch.setattr(plt.Axes, 'annotate',
                      lambda self, text, *a, **k: texts.append(text))
  plots.accuracy_curves(finished_runs.collect(workdir), str(tmp_path / 'b.png'))
  assert texts == ['82.34', '70.12']


def test_trained_tables_show_only_the_runs_named(sweep_dir):
  """What a sweep or campaign prints at its end: its directory's table of
  the runs it trained, the unfinished and the unnamed left out."""
  named = [os.path.join(sweep_dir, m, f'seed{s}')
           for m, s in (('none', 0), ('none', 1), ('kd', 1), ('adain', 2))]
  text = report.trained_tables(named + [str(sweep_dir) + '/missing'])
  header, table = text.split('\n', 1)
  assert header == f'{os.path.abspath(sweep_dir)}:'
  runs = [r for r in finished_runs.collect(sweep_dir)
          if (r['method'], r['seed']) in {('none', 0), ('none', 1),
                                          ('adain', 2)}]
  assert table == tables.to_markdown(tables.aggregate(runs))
  assert [line.split(' | ')[0] for line in table.splitlines()[2:]
          if line.startswith('| ')] == ['| none', '| adain']
  assert report.trained_tables([os.path.join(sweep_dir, 'kd', 'seed1')]) == ''


def test_report_finds_the_teacher_above_the_run(tmp_path, monkeypatch):
  """The teacher a run recorded as a relative path is found in the clone
  the run lives in, wherever the package is installed; where it is nowhere,
  asking for the figure is an error that names the fix."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from adain_kd_jax import cli  # pylint: disable=g-import-not-at-top
  clone = tmp_path / 'clone'
  (clone / 'teachers' / 't').mkdir(parents=True)
  run_dir = clone / 'runs' / 'sweep' / 'adain' / 'seed0'
  run_dir.mkdir(parents=True)
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(cli, 'project_root', lambda: str(tmp_path / 'site'))
  config = ml_collections.ConfigDict({'teacher_checkpoint': 'teachers/t'})
  stats_figures.find_teacher(config, str(run_dir))
  assert config.teacher_checkpoint == str(clone / 'teachers' / 't')
  config.teacher_checkpoint = 'teachers/gone'
  with pytest.raises(FileNotFoundError, match=r"the teacher 'teachers/gone' "
                     r'that .* recorded is neither above the run nor at .*'
                     r'site/teachers/gone; .* or pass --nostats\.'):
    stats_figures.find_teacher(config, str(run_dir))


def test_wall_time_is_the_whole_runs_over_its_segments():
  """The table's wall (min) adds a run's segments (wall_seconds_total), not
  its last one; a run from before the total was kept has its one segment."""
  runs = [{'method': 'kd', 'seed': s, 'summary': summary, 'metrics': []}
          for s, summary in enumerate([
              {'test_accuracy': 0.8, 'wall_seconds': 6.0,
               'wall_seconds_total': 198.0},
              {'test_accuracy': 0.8, 'wall_seconds': 132.0}])]
  row, = tables.aggregate(runs)
  assert row['wall_minutes'] == pytest.approx((198.0 + 132.0) / 2 / 60)
