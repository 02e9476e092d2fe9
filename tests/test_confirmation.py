"""results/fashion_mnist_lowdata/confirm_verdict.py: the pre-registered
analysis (two contrasts, Holm over two, no interim look) on fake runs."""

import json
import math
import os

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
