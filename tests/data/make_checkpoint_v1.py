r"""Writes tests/data/checkpoint_v1: a run checkpoint of an older version.

  python tests/data/make_checkpoint_v1.py tests/data/checkpoint_v1

Run from the root of the version that is to write it (it imports that
version's `adain_kd_jax` and `tests/conftest.py`). It trains an adain run of
`configs/smoke.py` on the `idx_data_dir` test files with the `teacher_export`
teacher (both made as the fixtures make them) for 4 steps, stopped after step
2 as SIGTERM would stop it; it keeps that checkpoint (OUT/checkpoints), then
resumes to step 4 with the same code and records what it ended with in
OUT/expected.json. tests/test_checkpoints.py resumes the kept checkpoint with
today's code and compares.

checkpoint_v1 was written by the version of 2026-11-30 before the methods
became a table of terms (commit c6536a0).
"""

import json
import os
import shutil
import sys
import tempfile

STEPS, STOP_AT = 4, 2


def settings(data_dir, teacher_dir):
  """The run's config overrides (shared with the test that resumes it)."""
  return dict(method='adain', points=(2,), num_train_steps=STEPS,
              log_every_steps=1, checkpoint_every_steps=STOP_AT,
              eval_every_epochs=1.0, keep_checkpoints=2, seed=5,
              data_dir=data_dir, teacher_checkpoint=teacher_dir)


def main(out):
  # The version to record is the one in the working directory (its modules,
  # as they were then named).
  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.getcwd())
  from tests import conftest  # Eight simulated CPU devices, as the tests.
  import jax
  import numpy as np
  from adain_kd_jax import idx
  from adain_kd_jax.training import checkpoints
  from adain_kd_jax.training import loop
  from adain_kd_jax.training import preemption
  # pylint: enable=g-import-not-at-top
  tmp = tempfile.mkdtemp()
  data_dir = os.path.join(tmp, 'idx')
  os.makedirs(data_dir)
  rng = np.random.default_rng(0)  # As conftest.idx_data_dir.
  for prefix, n in (('train', 256), ('t10k', 64)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 128, (n, 28, 28)) + 12 * labels[:, None, None]
    idx.write_idx(os.path.join(data_dir, f'{prefix}-images-idx3-ubyte.gz'),
                  images.astype(np.uint8))
    idx.write_idx(os.path.join(data_dir, f'{prefix}-labels-idx1-ubyte.gz'),
                  labels)
  teacher_dir = os.path.join(tmp, 'teacher')  # As conftest.teacher_export.
  checkpoints.save_teacher(
      teacher_dir, conftest.make_teacher_variables(),
      {'model': 'resnet8', 'num_classes': 10, 'dataset': 'fashion_mnist',
       'image_shape': [28, 28, 1], 'test_accuracy': 0.5}, step=1)
  config = conftest.idx_smoke_config(data_dir, teacher_dir,
                                     **settings(data_dir, teacher_dir))
  workdir = os.path.join(tmp, 'run')

  class StopAt(preemption.PreemptionWatcher):

    def should_stop(self, step):
      return step == STOP_AT

  real = loop.preemption.PreemptionWatcher
  loop.preemption.PreemptionWatcher = StopAt
  try:
    stopped = loop.train_and_evaluate(config, workdir)
  finally:
    loop.preemption.PreemptionWatcher = real
  assert stopped.get('preempted_at') == STOP_AT, stopped
  os.makedirs(out, exist_ok=True)
  shutil.rmtree(os.path.join(out, 'checkpoints'), ignore_errors=True)
  shutil.copytree(os.path.join(workdir, 'checkpoints'),
                  os.path.join(out, 'checkpoints'))
  summary = loop.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if r['split'] == 'train']
  with open(os.path.join(out, 'expected.json'), 'w') as f:
    json.dump({'jax': jax.__version__, 'steps': STEPS, 'stop_at': STOP_AT,
               'test_accuracy': summary['test_accuracy'],
               'train_loss': {str(r['step']): r['loss'] for r in train},
               'adain': {str(r['step']): r['adain'] for r in train}},
              f, indent=2)
  shutil.rmtree(tmp)


if __name__ == '__main__':
  main(sys.argv[1])
