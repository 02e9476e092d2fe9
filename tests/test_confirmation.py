"""results/fashion_mnist_lowdata/confirm_verdict.py: the pre-registered
analysis (two contrasts, Holm over two, no interim look) on fake runs."""

import json
import math
import os
import shutil

from scipy import stats

from adain_kd_jax.experiments import campaign

# pylint: disable=protected-access
VERDICT = campaign._load_module(
    'results/fashion_mnist_lowdata/confirm_verdict.py')

# Last-epoch test accuracy (%) by arm; adain_authors gets a seed-dependent
# offset over kd and logit_mse, so that the differences vary.
_BASE = {'none': 87.0, 'kd': 89.0, 'logit_mse': 89.6, 'adain_authors': 90.0,
         'dkd': 90.1}
_WIGGLE = (0.3, -0.2, 0.1, 0.0, -0.1, 0.2, -0.3, 0.1, 0.0, 0.2)


def _write(directory, arm, seed, acc):
  run = os.path.join(directory, arm, f'seed{seed}')
  os.makedirs(run)
  with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': 10, 'split': 'test', 'epoch': 1.0,
                        'accuracy': acc, 'loss': 0.3, 'count': 100}) + '\n')
  with open(os.path.join(run, 'summary.json'), 'w') as f:
    json.dump({'method': arm, 'seed': seed, 'test_accuracy': acc,
               'best_accuracy': acc, 'best_step': 10, 'best_on': 'test',
               'steps': 10, 'epochs': 1.0}, f)


def _fill(directory, skip=()):
  for arm, base in _BASE.items():
    for i, seed in enumerate(VERDICT.SEEDS):
      if (arm, seed) in skip:
        continue
      wiggle = _WIGGLE[i] if arm == 'adain_authors' else 0.0
      _write(directory, arm, seed, (base + wiggle) / 100)


def test_no_comparison_until_every_run_is_in(tmp_path, capsys):
  """One run missing: exit 1, the count, no numbers, no file."""
  _fill(str(tmp_path), skip={('dkd', 14)})
  assert VERDICT.main(['x', str(tmp_path)]) == 1
  out = capsys.readouterr().out
  assert out.startswith('1 of 50 runs not finished (first: dkd seed 14)')
  assert '+' not in out
  assert not os.path.exists(tmp_path / 'confirm_verdict.md')


def test_two_contrasts_holm_over_two_by_hand(tmp_path):
  """adain_authors - kd (+1.0 + wiggle) and - logit_mse (+0.4 + wiggle):
  the t-test p by hand, Holm over the two, and the decision's words."""
  _fill(str(tmp_path))
  assert VERDICT.main(['x', str(tmp_path)]) == 0
  text = (tmp_path / 'confirm_verdict.md').read_text()
  results = VERDICT.contrasts(
      VERDICT.finished_runs.collect(str(tmp_path)))
  n = 10
  mean_w = sum(_WIGGLE) / n
  sd = math.sqrt(sum((w - mean_w)**2 for w in _WIGGLE) / (n - 1))
  expected_p = []
  for (name, d, p, _, _), gap in zip(results, (1.0, 0.4)):
    assert abs(d['mean'] - (gap + mean_w)) < 1e-9, name
    t = (gap + mean_w) / (sd / math.sqrt(n))
    expected_p.append(2 * stats.t.sf(t, n - 1))
    assert abs(p - expected_p[-1]) < 1e-12
  small, large = sorted(expected_p)
  holm = [min(1, 2 * small), max(min(1, 2 * small), large)]
  assert abs(results[0][3] - holm[0]) < 1e-12
  assert abs(results[1][3] - holm[1]) < 1e-12
  assert results[0][4] == 'higher' and results[1][4] == 'higher'
  assert '| adain_authors - kd | +1.03 [+0.89, +1.17] |' in text


def test_decision_words():
  """Not shown with the CI's upper bound; no gain when it is <= 0."""
  d = {'mean': 0.1, 'ci_low': -0.2, 'ci_high': 0.4}
  assert VERDICT.decision(d, 0.3) == (
      'not shown; gains above +0.40 points excluded')
  assert VERDICT.decision(dict(d, mean=-0.3, ci_high=-0.05), 0.2) == 'no gain'
  assert VERDICT.decision(dict(d, mean=-0.3), 0.01) == 'lower'


POINTS = campaign._load_module(
    'results/fashion_mnist_lowdata/s1_points_verdict.py')


def test_s1_points_verdict_one_contrast_no_interim_look(tmp_path, capsys):
  """adain_both_points_s1 - adain_default (+0.5 + wiggle): the paired
  t-test by hand, uncorrected (a family of one); nothing before all twenty
  runs are in."""
  for i, seed in enumerate(POINTS.SEEDS):
    _write(str(tmp_path), 'adain_default', seed, 0.89)
    if seed != 9:
      _write(str(tmp_path), 'adain_both_points_s1', seed,
             (89.5 + _WIGGLE[i]) / 100)
  assert POINTS.main(['x', str(tmp_path)]) == 1
  assert capsys.readouterr().out.startswith(
      '1 of 20 runs not finished (first: adain_both_points_s1 seed 9)')
  _write(str(tmp_path), 'adain_both_points_s1', 9, (89.5 + _WIGGLE[4]) / 100)
  assert POINTS.main(['x', str(tmp_path)]) == 0
  name, d, p, words = POINTS.contrast(
      VERDICT.finished_runs.collect(str(tmp_path)))
  n = 10
  mean_w = sum(_WIGGLE) / n
  sd = math.sqrt(sum((w - mean_w)**2 for w in _WIGGLE) / (n - 1))
  t = (0.5 + mean_w) / (sd / math.sqrt(n))
  assert name == 'adain_both_points_s1 - adain_default'
  assert abs(d['mean'] - (0.5 + mean_w)) < 1e-9
  assert abs(p - 2 * stats.t.sf(t, n - 1)) < 1e-12
  assert words == 'higher'
  assert '| adain_both_points_s1 - adain_default | +0.53 [' in (
      tmp_path / 's1_points_verdict.md').read_text()


def test_s1_check_rule_on_the_committed_runs():
  """The rule of CONFIRMATION.md on the committed check: the last
  evaluation's validation top-1 of each arm's best setting against the
  student alone's 87.50% plus 0.5; only adain_both_points_s1 passes, so
  only it and adain_default get the confirmation seeds."""
  plan = campaign._load_module('results/fashion_mnist_lowdata/plan.py')
  workdir = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'results/fashion_mnist_lowdata/runs')
  results = plan.s1_check_results(workdir)
  assert {a: (n, round(v, 2), ok) for a, (n, v, ok) in results.items()} == {
      'adain_s1_mean_warm': ('w0.3', 87.96, False),
      'adain_s1_both_warm': ('w3.0', 87.88, False),
      'adain_both_points_s1': ('s1w0.1', 90.36, True)}
  runs = plan._s1_final(workdir)
  assert sorted({r.name.split('/')[2] for r in runs}) == [
      'adain_both_points_s1', 'adain_default']
  assert len(runs) == 20
  by_arm = {r.name.split('/')[2]: r.overrides for r in runs if
            r.name.endswith('seed5')}
  assert by_arm['adain_both_points_s1']['point_weights'] == (0.1, 1.0)
  assert by_arm['adain_default'] == {'points': (0,), 'loss.adain': 1.0,
                                     'seed': 5}


P3 = campaign._load_module('results/fashion_mnist_lowdata/p3_verdict.py')


def test_p3_verdict_three_contrasts_holm_over_three(tmp_path, capsys):
  """adain_s1_both_warm against mean only (+0.2 + wiggle), kd (+1.0 +
  wiggle) and logit_mse (+0.5 + wiggle): the p-values by hand, Holm over
  three; nothing before all fifty runs are in."""
  base = {'none': 87.0, 'kd': 89.0, 'logit_mse': 89.5,
          'adain_s1_mean_warm': 89.8, 'adain_s1_both_warm': 90.0}
  for arm, acc in base.items():
    for i, seed in enumerate(P3.SEEDS):
      if (arm, seed) == ('kd', 3):
        continue
      wiggle = _WIGGLE[i] if arm == P3.REFERENCE else 0.0
      _write(str(tmp_path), arm, seed, (acc + wiggle) / 100)
  assert P3.main(['x', str(tmp_path)]) == 1
  assert capsys.readouterr().out.startswith('1 of 50 runs not finished')
  _write(str(tmp_path), 'kd', 3, 0.89)
  assert P3.main(['x', str(tmp_path)]) == 0
  results = P3.contrasts(VERDICT.finished_runs.collect(str(tmp_path)))
  n = 10
  mean_w = sum(_WIGGLE) / n
  sd = math.sqrt(sum((w - mean_w)**2 for w in _WIGGLE) / (n - 1))
  p = []
  for (name, d, pi, _, _), gap, arm in zip(
      results, (0.2, 1.0, 0.5), P3.CONTRASTS):
    assert name == f'adain_s1_both_warm - {arm}'
    assert abs(d['mean'] - (gap + mean_w)) < 1e-9
    p.append(2 * stats.t.sf((gap + mean_w) / (sd / math.sqrt(n)), n - 1))
    assert abs(pi - p[-1]) < 1e-12
  # Holm over three: the smallest times 3, the next times 2, the largest
  # times 1, each at least the one before.
  order = sorted(range(3), key=lambda i: p[i])
  expected, running = [0.0] * 3, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (3 - rank) * p[i]))
    expected[i] = running
  for (_, _, _, adjusted, _), e in zip(results, expected):
    assert abs(adjusted - e) < 1e-12
  assert (tmp_path / 'p3_verdict.md').read_text().count('| adain_s1_both') == 3


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each pre-registered verdict script, the file it writes and where.
_VERDICTS = ((VERDICT, 'confirm_verdict.md', VERDICT.DIRECTORY),
             (POINTS, 's1_points_verdict.md', VERDICT.DIRECTORY),
             (P3, 'p3_verdict.md', P3.DIRECTORY))


def test_committed_verdicts_are_what_the_committed_runs_give(tmp_path,
                                                              capsys):
  """Every committed verdict file (the confirmation's at least) is what its
  script writes from the committed runs, verbatim."""
  checked = []
  for module, name, directory in _VERDICTS:
    committed = os.path.join(_ROOT, directory, name)
    if not os.path.exists(committed):
      continue
    out = tmp_path / name
    os.makedirs(out)
    # The script writes beside the runs; run it on a copy of their files.
    shutil.copytree(os.path.join(_ROOT, directory), out / 'runs')
    os.remove(out / 'runs' / name)
    assert module.main(['x', str(out / 'runs')]) == 0, name
    capsys.readouterr()
    with open(committed) as f:
      assert (out / 'runs' / name).read_text() == f.read(), name
    checked.append(name)
  assert 'confirm_verdict.md' in checked
