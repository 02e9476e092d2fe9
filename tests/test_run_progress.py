"""run_progress: the checkpoints' meta as a record, on disk as before."""

from adain_kd_jax.training import run_progress


def test_a_fresh_runs_meta_is_the_keys_it_always_had():
  """No resumes and no changes: best, step and the three totals only."""
  assert run_progress.RunProgress().to_json() == {
      'best_accuracy': -1.0, 'best_step': 0, 'wall_seconds_total': 0.0,
      'train_seconds_total': 0.0, 'train_images_total': 0}


def test_round_trip_and_an_older_checkpoints_meta():
  """A meta round-trips; one written before the totals existed reads with
  zero totals, and unknown keys are left out."""
  meta = {'best_accuracy': 0.5, 'best_step': 4, 'resumes': 2,
          'config_changes': [{'field': 'num_epochs', 'was': 1, 'now': 2,
                              'at_step': 6}],
          'wall_seconds_total': 3.5, 'train_seconds_total': 2.0,
          'train_images_total': 640}
  record = run_progress.RunProgress.from_json(meta)
  assert record.resumes == 2 and record.to_json() == meta
  older = run_progress.RunProgress.from_json(
      {'best_accuracy': 0.25, 'best_step': 2, 'something_else': 1})
  assert older == run_progress.RunProgress(best_accuracy=0.25, best_step=2)
