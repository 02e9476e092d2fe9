"""published.py: a row's runs beside the published numbers, by hand."""

import json
import os

from adain_kd_jax.experiments import published


def _run(row_dir, method, seed, best, last, teacher=0.7561):
  """A finished run: test top-1 `best` at step 10, `last` at step 20."""
  run = os.path.join(row_dir, method, f'seed{seed}')
  os.makedirs(run)
  with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
    for step, accuracy in ((10, best), (20, last)):
      f.write(json.dumps({'step': step, 'split': 'test', 'accuracy': accuracy,
                          'epoch': step / 10, 'count': 100}) + '\n')
  with open(os.path.join(run, 'summary.json'), 'w') as f:
    json.dump({'method': method, 'seed': seed, 'test_accuracy': last,
               'best_accuracy': best, 'best_step': 10, 'best_on': 'test',
               'teacher_test_accuracy': None if method == 'none' else teacher},
              f)


def test_beside_published_by_hand(tmp_path):
  """Each method's last and best epoch beside its published number, the
  difference at the published epoch (DKD's best); unpublished and unrun
  methods keep their rows."""
  row_dir = str(tmp_path / 'wrn_40_2-wrn_16_2')
  _run(row_dir, 'none', 0, best=0.75, last=0.70)
  _run(row_dir, 'none', 1, best=0.73, last=0.72)
  _run(row_dir, 'kd', 0, best=0.76, last=0.74)
  _run(row_dir, 'dkd', 0, best=0.78, last=0.75)
  _run(row_dir, 'adain', 0, best=0.75, last=0.745)
  os.makedirs(os.path.join(row_dir, 'crd', 'seed0'))  # Unfinished: left out.
  numbers = {'teacher': 75.61, 'none': 73.26, 'kd': 74.92, 'fitnet': 73.58,
             'dkd': 76.23}
  text = published.write_beside(row_dir, numbers, at={'dkd': 'best'},
                                title='wrn_40_2 -> wrn_16_2')
  assert text.splitlines()[2:] == [
      published.HEADER,
      '|---|---:|---:|---:|---:|---|---:|',
      '| teacher | 3 | 75.61 | - | 75.61 | last | +0.00 |',
      '| none | 2 | 71.00 ± 1.41 | 74.00 ± 1.41 | 73.26 | last | -2.26 |',
      '| kd | 1 | 74.00 | 76.00 | 74.92 | last | -0.92 |',
      '| dkd | 1 | 75.00 | 78.00 | 76.23 | best | +1.77 |',
      '| adain | 1 | 74.50 | 75.00 | - | - | - |',
      '| fitnet | 0 | - | - | 73.58 | last | - |',
  ]
  assert text.startswith('## wrn_40_2 -> wrn_16_2\n\n')
  with open(os.path.join(row_dir, published.FILE)) as f:
    assert f.read() == text
