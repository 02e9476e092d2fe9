"""The finished runs of a sweep directory, as report rows are made from.

`collect(DIR)` reads every DIR/<method>/seed<k>/summary.json (or a single
run's DIR/summary.json and DIR/compare_<method>/summary.json) with its
metrics.jsonl; `best_test_accuracy(run)` is the test accuracy at the run's
best epoch (chosen on the split in its summary's `best_on`).
"""

import glob
import json
import os
from typing import Any

from adain_kd_jax.experiments import plots


def read_json(path):
  with open(path) as f:
    return json.load(f)


def _method_order(directory: str) -> list[str]:
  path = os.path.join(directory, 'sweep.json')
  if os.path.exists(path):
    try:
      return list(read_json(path).get('methods', []))
    except (OSError, ValueError):
      pass
  return []


def _single_runs(directory: str) -> list[str]:
  """A run directory's own summary.json and those of its compare_<method>
  runs (train.py with config.compare_to): the runs of a single run."""
  if not os.path.isfile(os.path.join(directory, 'summary.json')):
    return []
  return [os.path.join(directory, 'summary.json')] + sorted(glob.glob(
      os.path.join(directory, 'compare_*', 'summary.json')))


def collect(directory: str) -> list[dict[str, Any]]:
  """The finished runs under `directory` (`*/seed*/summary.json`), or of a
  single run: DIR/summary.json and DIR/compare_*/summary.json, each row
  named by the summary's method.

  Returns:
    One dict per run: 'method', 'seed', 'dir', 'summary' (summary.json) and
    'metrics' (the records of metrics.jsonl), ordered by method (as in
    sweep.json, then by name) and seed.
  """
  runs = []
  single = _single_runs(directory)
  for path in single or glob.glob(os.path.join(directory, '*', 'seed*',
                                               'summary.json')):
    run_dir = os.path.dirname(path)
    summary = read_json(path)
    # The directory names the row: the method in a sweep, a variant or a
    # setting in a tuning directory (whose runs share a method).
    method = (summary.get('method', 'run') if single
              else os.path.basename(os.path.dirname(run_dir)))
    seed = summary.get('seed')
    if seed is None:
      seed = int(os.path.basename(run_dir)[len('seed'):])
    runs.append({'method': method, 'seed': seed, 'dir': run_dir,
                 'summary': summary, 'metrics': plots.read_metrics(run_dir)})
  order = _method_order(directory)
  rank = lambda m: (order.index(m), '') if m in order else (len(order), m)
  return sorted(runs, key=lambda r: (rank(r['method']), r['seed']))


def best_test_accuracy(run: dict[str, Any]) -> float | None:
  """Test accuracy at the run's best epoch (see the module docstring)."""
  summary = run['summary']
  for r in run['metrics']:
    if r.get('split') == 'test' and r.get('step') == summary.get('best_step'):
      return r['accuracy']
  if summary.get('best_on', 'test') == 'test':
    return summary.get('best_accuracy')
  return None
