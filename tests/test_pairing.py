"""The pairing by seed that the paired confidence intervals rest on."""

import itertools

import jax
import numpy as np

from adain_kd_jax import methods
from adain_kd_jax.training import run as run_lib
from tests.conftest import idx_smoke_config


def _first_batches(run, k=3):
  return [jax.device_get(b) for b in itertools.islice(
      run.data.train_batches(0), k)]


def test_one_seed_is_one_student_init_and_one_batch_order_for_every_method(
    idx_data_dir, teacher_export):
  """Built by create_run, every method of seed 4 starts from the identical
  student and reads the identical first batches; seed 5 differs in both
  (so the check can fail). Holdout and subset are on, as in the benchmark."""
  def build(method, seed):
    config = idx_smoke_config(idx_data_dir, teacher_export, method=method,
                              seed=seed, holdout=32, train_per_class=8)
    config.crd.num_negatives = 16
    config.points = (-1,)
    run = run_lib.create_run(config, None)
    run.close()
    student = jax.device_get((run.state.params['student'],
                              run.state.batch_stats['student']))
    return student, _first_batches(run)

  reference_student, reference_batches = build('none', 4)
  for method in methods.METHODS:
    if method == 'none':
      continue
    student, batches = build(method, 4)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(
        a, b, err_msg=method), reference_student, student)
    for a, b in zip(reference_batches, batches):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=method)
  other_student, other_batches = build('kd', 5)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(other_student), jax.tree.leaves(reference_student)))
  assert not np.array_equal(other_batches[0]['image'],
                            reference_batches[0]['image'])
