"""The grid (grid.py, grid_step.py): many runs in one jitted program.

Equal means: a grid of one is the solo step bit for bit; every member of a
mixed grid (every method x 2 seeds) agrees with its solo run to rounding
after the first step; the same grid rerun, or stopped and resumed, is
bit-identical.
"""

import json
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from adain_kd_jax.experiments import sweep
from adain_kd_jax import methods
from adain_kd_jax.training import grid
from adain_kd_jax.training import grid_step
from adain_kd_jax.training import preemption
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import run_record
from adain_kd_jax.training import steps as steps_lib
from tests.conftest import idx_smoke_config

_METHODS = tuple(methods.METHODS)
# The loop layout's mixed grid: one method of each kind of term (logits,
# features with a connector or a regressor, attention, statistics, the
# stateful crd and vid, the AdaIN family), so its compile stays within CI's
# budget; every method of METHODS is bit-identical as a grid of one below.
# The relational terms are left out here: their large weights (pkt 30000)
# carry float32 summation-order differences past 1e-6 (pkt 1.2e-5, rkd
# 1.0e-6 relative in a mixed grid), although each is exact as a grid of one.
_MIXED = ('none', 'kd', 'logit_mse', 'fitnet', 'at', 'stat_l2', 'crd',
          'dkd', 'vid', 'adain', 'adain_kd')


def _config(idx_data_dir, teacher_export, method='kd', seed=0, **overrides):
  config = idx_smoke_config(idx_data_dir, teacher_export, method=method,
                            seed=seed, **overrides)
  config.crd.num_negatives = 64
  return config


def _copy(tree):
  return jax.tree.map(lambda x: x.copy(), tree)


def _solo_and_grid(configs, steps=1, layout='loop'):
  """Runs the solo step of each config and one grid of all of them from the
  same states on the same batches; returns (solo, grid) lists of
  (state, metrics)."""
  runs = [run_lib.create_run(c, None) for c in configs]
  try:
    seeds = list(dict.fromkeys(int(c.seed) for c in configs))
    slot_runs = [next(r for r in runs if r.config.seed == s) for s in seeds]
    batches = [[b for _, b in zip(range(steps), r.data.train_batches(0))]
               for r in slot_runs]
    stacked = lambda r, b: steps_lib.to_global(
        r.mesh, jax.tree.map(lambda x: np.asarray(x)[None], b),
        jax.sharding.PartitionSpec(None, 'data'))
    solo = []
    for r in runs:
      state = _copy(r.state)
      for t in range(steps):
        state, metrics = r.multi_step(
            state, r.teacher_vars, None,
            stacked(r, batches[seeds.index(r.config.seed)][t]))
      solo.append((state, metrics))
    members = [grid_step.MemberStep(r.distiller, r.tx, r.schedule, False)
               for r in runs]
    preps = [run_lib.make_preprocess(r.config, r.dataset_info)
             for r in slot_runs]
    slots = grid_step.seed_slots(runs)
    if layout == 'vmap':
      slots, why = grid_step.vmap_slots(runs, slots)
      assert slots is not None, why
    multi = grid_step.jit_grid_multi_step(runs[0].mesh, members, preps,
                                          slots, layout)
    teachers = tuple(next((r.teacher_vars for r in runs
                           if r.config.seed == s and
                           r.teacher_vars is not None), None) for s in seeds)
    states = tuple(_copy(r.state) for r in runs)
    for t in range(steps):
      states, metrics = multi(states, teachers, tuple(
          stacked(r, batches[i][t]) for i, r in enumerate(slot_runs)))
    return solo, list(zip(states, metrics))
  finally:
    for r in runs:
      r.close()


@pytest.mark.parametrize('method', _METHODS)
def test_grid_of_one_is_the_solo_step_bit_for_bit(method, idx_data_dir,
                                                  teacher_export):
  """A grid of one member, for every method: the same state and metrics
  bits as the solo step."""
  solo, grid_out = _solo_and_grid(
      [_config(idx_data_dir, teacher_export, method)], steps=2)
  jax.tree.map(np.testing.assert_array_equal, solo, grid_out)


def test_grid_of_one_is_the_solo_step_across_a_first_phase(idx_data_dir,
                                                          teacher_export):
  """FSP with its first phase 1 step long (1/16 epoch): a grid of one is
  the solo step bit for bit through the phase and after it."""
  solo, grid_out = _solo_and_grid(
      [_config(idx_data_dir, teacher_export, 'fsp', init_epochs=1 / 16)],
      steps=2)
  jax.tree.map(np.testing.assert_array_equal, solo, grid_out)


@pytest.mark.parametrize('layout,grid_methods,rtol,atol', [
    ('loop', _MIXED, 1e-6, 1e-7),
    # The seeds stacked under vmap: the stateful, the step-dependent and the
    # teacher-sharing terms. Every convolution becomes a grouped one, whose
    # sums XLA orders otherwise: kd's term was 2.8e-6 off (relative). A KL
    # term's absolute error follows its log-probabilities (order 1), not its
    # value: dkd's 0.00826 was 2.1e-7 off (2.5e-5 relative) on another CPU,
    # hence an absolute 1e-6 added to the relative 1e-5.
    ('vmap', ('crd', 'none', 'kd', 'adain', 'dkd', 'at'), 1e-5, 1e-6)])
def test_mixed_grid_agrees_with_solo_after_one_step(
    layout, grid_methods, rtol, atol, idx_data_dir, teacher_export):
  """Every method x 2 seeds in one grid: each member's loss and parameters
  after the first step agree with its solo run (loss terms within 1e-6
  relative in the loop layout; within 1e-6 + 1e-5 x the value under vmap)."""
  configs = [_config(idx_data_dir, teacher_export, m, s)
             for m in grid_methods for s in (0, 1)]
  solo, grid_out = _solo_and_grid(configs, layout=layout)
  exact = []
  for config, (s_state, s_m), (g_state, g_m) in zip(configs, solo, grid_out):
    where = f'{config.method} seed {config.seed}'
    for name in s_m:
      np.testing.assert_allclose(g_m[name], s_m[name], rtol=rtol, atol=atol,
                                 err_msg=f'{where}: {name}')
    jax.tree.map(lambda a, b, w=where: np.testing.assert_allclose(
        a, b, rtol=1e-5, atol=1e-6, err_msg=w), g_state.params,
                 s_state.params)
    if all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves((g_state, g_m)), jax.tree.leaves((s_state, s_m)))):
      exact.append(where)
  # The two seeds differ (batches and init), so seeds share nothing wrongly.
  assert not np.array_equal(grid_out[0][1]['loss'], grid_out[1][1]['loss'])
  print(f'{layout}: bit-identical with solo:', exact)


def test_vmap_layout_needs_a_full_table(idx_data_dir, teacher_export):
  """vmap stacks seeds that have the same members (in any order); a seed
  with another member, or one seed, is not stacked and says why."""
  configs = [_config(idx_data_dir, teacher_export, m, s)
             for m, s in (('kd', 0), ('none', 1), ('none', 0), ('kd', 1),
                          ('at', 2))]
  runs = [run_lib.create_run(c, None) for c in configs]
  try:
    slots, why = grid_step.vmap_slots(runs[:4],
                                      grid_step.seed_slots(runs[:4]))
    assert why == '' and sorted(map(sorted, slots)) == [[0, 2], [1, 3]]
    by_slot = [[(runs[i].config.method, runs[i].config.seed) for i in idx]
               for idx in slots]
    assert [m for m, _ in by_slot[0]] == [m for m, _ in by_slot[1]]
    assert {s for _, s in by_slot[0]} == {0} and {s for _, s in by_slot[1]} == {1}
    slots, why = grid_step.vmap_slots(runs, grid_step.seed_slots(runs))
    assert slots is None and 'same members' in why
    slots, why = grid_step.vmap_slots(runs[:1], [[0]])
    assert slots is None and 'one seed' in why
  finally:
    for r in runs:
      r.close()


# --- the sweep: grid = solo within tolerance, rerun and resume exact ------

_TABLE = (('kd', 'adain', 'crd'), (0, 1))


def _table_config(idx_data_dir, teacher_export):
  return _config(idx_data_dir, teacher_export, num_train_steps=6,
                 log_every_steps=1, checkpoint_every_steps=2,
                 eval_every_epochs=0.25, keep_checkpoints=10)


def _records(directory):
  with open(os.path.join(directory, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  for r in records:
    r.pop('images_per_sec', None)
  return records


def _summary(directory):
  with open(os.path.join(directory, 'summary.json')) as f:
    return json.load(f)


def _final_state(directory, step=6):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.StandardCheckpointer().restore(
      os.path.join(directory, 'checkpoints', str(step), 'state'))


@pytest.fixture(scope='module')
def grid_table(tmp_path_factory, idx_data_dir, teacher_export):
  """The table trained as one grid, uninterrupted."""
  workdir = str(tmp_path_factory.mktemp('grid'))
  results = sweep.train_cells_as_grid(
      _table_config(idx_data_dir, teacher_export), *_TABLE, workdir)
  assert all('test_accuracy' in r for r in results.values()), results
  return workdir


def test_sweep_grid_equals_solo_sweep(grid_table, tmp_path, idx_data_dir,
                                      teacher_export):
  """`sweep --grid` and `sweep` on one table: every run's losses within
  1e-4 relative after 6 steps and test accuracies within one example."""
  solo_dir = str(tmp_path / 'solo')
  sweep.train_cells_in_turn(_table_config(idx_data_dir, teacher_export),
                            *_TABLE, solo_dir)
  for method in _TABLE[0]:
    for seed in _TABLE[1]:
      g_dir = sweep.run_dir(grid_table, method, seed)
      s_dir = sweep.run_dir(solo_dir, method, seed)
      g_rec, s_rec = _records(g_dir), _records(s_dir)
      assert [(r['step'], r['split']) for r in g_rec] == [
          (r['step'], r['split']) for r in s_rec]
      for g, s in zip(g_rec, s_rec):
        assert g.keys() == s.keys()
        for key in ('loss', 'ce', 'accuracy') if g['split'] == 'train' else (
            'loss',):
          assert g[key] == pytest.approx(s[key], rel=1e-4), (method, seed)
      g_sum, s_sum = _summary(g_dir), _summary(s_dir)
      assert abs(g_sum['test_accuracy'] - s_sum['test_accuracy']) <= 1 / 64
      assert g_sum['grid']['size'] == 6 and 'grid' not in s_sum
      assert g_sum['grid']['shared_teacher']
      assert g_sum['steps'] == s_sum['steps'] == 6


def _assert_same_bits(a_dir, b_dir):
  for method in _TABLE[0]:
    for seed in _TABLE[1]:
      a, b = sweep.run_dir(a_dir, method, seed), sweep.run_dir(b_dir, method,
                                                               seed)
      assert _records(a) == _records(b), (method, seed)
      jax.tree.map(np.testing.assert_array_equal, _final_state(a),
                   _final_state(b))


def test_grid_rerun_is_bit_identical(grid_table, tmp_path, idx_data_dir,
                                     teacher_export):
  """The same grid trained again: the same metrics and final states."""
  again = str(tmp_path / 'again')
  sweep.train_cells_as_grid(_table_config(idx_data_dir, teacher_export),
                            *_TABLE, again)
  _assert_same_bits(again, grid_table)


def _stopped_at(stop_step, monkeypatch, config, workdir):
  """The table trained as a grid that a real SIGTERM stops after
  `stop_step`; the watcher is restored afterwards."""
  should_stop = preemption.PreemptionWatcher.should_stop

  def signal_at(self, step):
    if step == stop_step:
      os.kill(os.getpid(), signal.SIGTERM)
    return should_stop(self, step)

  monkeypatch.setattr(preemption.PreemptionWatcher, 'should_stop', signal_at)
  try:
    return sweep.train_cells_as_grid(config, *_TABLE, workdir)
  finally:
    monkeypatch.setattr(preemption.PreemptionWatcher, 'should_stop',
                        should_stop)


def test_a_grid_cell_begun_under_another_config_is_refused(
    tmp_path, idx_data_dir, teacher_export):
  """sweep --grid checks each cell's recorded config before it writes
  anything: a changed learning rate is named, and config.json is kept."""
  workdir = str(tmp_path / 'table')
  config = _table_config(idx_data_dir, teacher_export)
  cell = sweep.run_dir(workdir, 'kd', 0)
  os.makedirs(os.path.join(cell, 'checkpoints', '2'))  # Progress made.
  run_record.write(cell, sweep.run_config(config, 'kd', 0))
  with open(os.path.join(cell, 'config.json')) as f:
    before = f.read()
  config.learning_rate = 2 * config.learning_rate
  with pytest.raises(ValueError, match='learning_rate'):
    sweep.train_cells_as_grid(config, *_TABLE, workdir)
  with open(os.path.join(cell, 'config.json')) as f:
    assert f.read() == before


def test_killed_between_two_members_saves_resumes_as_one_grid(
    grid_table, tmp_path, monkeypatch, idx_data_dir, teacher_export, capsys):
  """Two members lack the newest checkpoint (a grid killed while it saved):
  the others roll back to the newest step all saved, and the whole table
  resumes there as one grid and ends with the uninterrupted bits."""
  workdir = str(tmp_path / 'killed')
  config = _table_config(idx_data_dir, teacher_export)
  _stopped_at(4, monkeypatch, config, workdir)
  for method, seed in (('kd', 0), ('adain', 1)):
    shutil.rmtree(os.path.join(sweep.run_dir(workdir, method, seed),
                               'checkpoints', '4'))
  capsys.readouterr()
  results = sweep.train_cells_as_grid(config, *_TABLE, workdir)
  out = capsys.readouterr().out
  assert out.count('rolled back to step 2') == 4, out
  assert 'Grid of 6 (' in out and 'Grid of 2 (' not in out
  assert all(r['grid']['size'] == 6 for r in results.values())
  _assert_same_bits(workdir, grid_table)
  run = sweep.run_dir(workdir, 'crd', 0)
  assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == [
      '2', '4', '6']


def test_sigterm_then_resume_is_bit_identical(grid_table, tmp_path,
                                              monkeypatch, idx_data_dir,
                                              teacher_export, capsys):
  """A real SIGTERM after step 3: every member saves step 3 and stops; the
  rerun resumes them all there and ends with the uninterrupted bits; a
  seed added to the finished table trains only its new members."""
  workdir = str(tmp_path / 'stopped')
  config = _table_config(idx_data_dir, teacher_export)
  results = _stopped_at(3, monkeypatch, config, workdir)
  assert {r['preempted_at'] for r in results.values()} == {3}
  assert 'Preempted: saved step 3' in capsys.readouterr().out
  results = sweep.train_cells_as_grid(config, *_TABLE, workdir)
  assert all(r['resumes'] == 1 for r in results.values())
  # Not a terminal here: progress as lines, never a bar's carriage returns.
  assert '\r' not in capsys.readouterr().err
  _assert_same_bits(workdir, grid_table)
  results = sweep.train_cells_as_grid(config, ('kd',), (0, 2), workdir)
  assert results[('kd', 0)] == 'skipped'
  assert results[('kd', 2)]['grid']['members'] == ['kd/seed2']


def test_members_group_by_what_they_share(idx_data_dir, teacher_export):
  """Another student or batch size is another grid; a loss weight, a
  method or a seed is not."""
  base = _config(idx_data_dir, teacher_export)
  same = [base.copy_and_resolve_references() for _ in range(3)]
  same[1].method, same[2].seed = 'dkd', 3
  same[1].loss.kd = 2.0
  assert len({grid.group_key(c) for c in same}) == 1
  other = base.copy_and_resolve_references()
  other.model = 'resnet14'
  batch = base.copy_and_resolve_references()
  batch.batch_size = 32
  assert len({grid.group_key(c) for c in (base, other, batch)}) == 3


def test_campaign_packs_ready_runs_into_grids(tmp_path, idx_data_dir,
                                              teacher_export):
  """campaign --grid: ready runs that share go to one grid; a teacher run,
  a run waiting for a missing path and another student do not join it."""
  from adain_kd_jax.experiments import campaign_grid
  from adain_kd_jax.experiments import parallel
  config = lambda m, **kw: _config(idx_data_dir, teacher_export, m, **kw)
  jobs = [parallel.Job(str(tmp_path / 'kd'), config('kd')),
          parallel.Job(str(tmp_path / 'dkd'), config('dkd', seed=1)),
          parallel.Job(str(tmp_path / 'teacher'), config('none'),
                       export_to=str(tmp_path / 'export')),
          parallel.Job(str(tmp_path / 'waits'), config('kd'),
                       needs=(str(tmp_path / 'missing'),)),
          parallel.Job(str(tmp_path / 'other'), config('kd',
                                                       model='resnet14'))]
  packs = campaign_grid.pack(jobs)
  assert [[os.path.basename(j.run_dir) for j in p] for p in packs] == [
      ['kd', 'dkd'], ['other']]


def test_member_names_keep_settings_of_one_method_and_seed_apart():
  """Three kd settings at seed 100 are three names, not 'kd/seed100' x 3."""
  import types  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import grid
  members = [types.SimpleNamespace(
      run=types.SimpleNamespace(workdir=f'/w/tune/kd/t{t}/seed100'),
      name='kd/seed100') for t in (2, 4, 8)]
  assert grid.member_names(members) == ['t2/seed100', 't4/seed100',
                                        't8/seed100']
  assert grid.member_names(members[:1]) == ['kd/seed100']


def test_sweep_grid_in_the_vmap_layout_records_it(tmp_path, idx_data_dir,
                                                  teacher_export, capsys):
  """grid_layout 'vmap': a full table trains stacked and its summaries say
  so; a seed added later (nothing to stack) trains as a loop and says why."""
  config = _config(idx_data_dir, teacher_export, num_train_steps=2,
                   grid_layout='vmap')
  workdir = str(tmp_path / 'vmap')
  results = sweep.train_cells_as_grid(config, ('kd', 'none'), (0, 1), workdir)
  assert {r['grid']['layout'] for r in results.values()} == {'vmap'}
  assert all(0 <= r['test_accuracy'] <= 1 for r in results.values())
  results = sweep.train_cells_as_grid(config, ('kd', 'none'), (0, 1, 2),
                                    workdir)
  assert results[('kd', 2)]['grid']['layout'] == 'loop'
  assert 'grid_layout vmap: one seed has nothing to stack' in (
      capsys.readouterr().out)
