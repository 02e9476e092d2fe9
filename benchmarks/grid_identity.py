r"""For which methods a mixed grid's member is its solo run bit for bit.

  python benchmarks/grid_identity.py [--seeds=0,1] [--steps=2] \
      [--methods=...] [--out=FILE.json]

Builds every method of `methods.METHODS` (or --methods) for every seed as
the sweep does (`run.create_run`: configs/default.py, resnet20 teacher export
-> resnet8, Fashion-MNIST, batch --batch_size), trains each alone for --steps
steps (`Run.multi_step`) and all of them as one grid
(`grid_step.jit_grid_multi_step`) from the same states on the same batches,
and prints one JSON object: per member, `bit_identical` (every leaf of the
final TrainState and of every step's metrics equal) and the largest relative
difference, max |grid - solo| / max |solo| over each leaf, for the state and
for the metrics. What is exact depends on how XLA fuses the grid's program,
so the list is this platform's and jax version's (both recorded);
tests/test_grid.py asserts only what does not depend on it.
"""

import os
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from adain_kd_jax import host_setup
from benchmarks import output
# pylint: enable=g-import-not-at-top,wrong-import-position

_TEACHER_CKPT = flags.DEFINE_string(
    'teacher_checkpoint', 'teachers/fashion_mnist_resnet20', 'Its export.')
_METHODS = flags.DEFINE_list('methods', [], 'Default: methods.METHODS.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds (one grid slot each).')
_STEPS = flags.DEFINE_integer('steps', 2, 'Training steps.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Batch size.')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 1024,
                                    'Training images read.')
_CRD_NEG = flags.DEFINE_integer('crd_negatives', 256, "CRD's negatives.")
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')


def _rel(a, b):
  """max |a - b| / max |b| (0 if both are all zero; inf if only b is)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  diff, scale = float(np.max(np.abs(a - b), initial=0.)), float(
      np.max(np.abs(b), initial=0.))
  return diff / scale if scale else (0. if diff == 0 else float('inf'))


def _copy(tree):
  """A copy of every array (the steps donate their states)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: x.copy(), tree)


def _runs(methods, seeds):
  """Every method for every seed, built as the sweep builds its runs."""
  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import run as run_lib
  from configs import default
  # pylint: enable=g-import-not-at-top

  def config_of(method, seed):
    c = default.get_config()
    c.update(method=method, seed=seed, model='resnet8', teacher='resnet20',
             teacher_checkpoint=_TEACHER_CKPT.value,
             batch_size=_BATCH.value, train_limit=_TRAIN_LIMIT.value,
             test_limit=256, compare_to='')
    c.crd.num_negatives = _CRD_NEG.value
    return c

  return [run_lib.create_run(config_of(m, s), None)
          for s in seeds for m in methods]


def _batches(slot_runs):
  """Per seed slot, its first --steps batches, one step each."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from adain_kd_jax.training import steps
  # pylint: enable=g-import-not-at-top
  return [[steps.to_global(r.mesh,
                           jax.tree.map(lambda x: np.asarray(x)[None], b),
                           P(None, 'data'))
           for _, b in zip(range(_STEPS.value), r.data.train_batches(0))]
          for r in slot_runs]


def _solo(runs, batches, seeds):
  """Each run alone for --steps steps: per run, (state, [metrics])."""
  import jax  # pylint: disable=g-import-not-at-top
  solo = []
  for r in runs:
    state, metrics = _copy(r.state), []
    for t in range(_STEPS.value):
      state, m = r.multi_step(state, r.teacher_vars, None,
                              batches[seeds.index(r.config.seed)][t])
      metrics.append(m)
    solo.append((jax.device_get(state), jax.device_get(metrics)))
    print(f'solo {r.config.method} seed {r.config.seed} done',
          file=sys.stderr, flush=True)
  return solo


def _grid(runs, slot_runs, batches, seeds):
  """All runs as one grid for --steps steps: (states, [metrics])."""
  # pylint: disable=g-import-not-at-top
  import jax
  from adain_kd_jax.training import grid_step
  from adain_kd_jax.training import run as run_lib
  # pylint: enable=g-import-not-at-top
  members = [grid_step.MemberStep(r.distiller, r.tx, r.schedule, False)
             for r in runs]
  preps = [run_lib.make_preprocess(r.config, r.dataset_info)
           for r in slot_runs]
  multi = grid_step.jit_grid_multi_step(runs[0].mesh, members, preps,
                                        grid_step.seed_slots(runs))
  teachers = tuple(next(r.teacher_vars for r in runs
                        if r.config.seed == s and r.teacher_vars is not None)
                   for s in seeds)
  states, grid_metrics = tuple(_copy(r.state) for r in runs), []
  for t in range(_STEPS.value):
    states, m = multi(states, teachers, tuple(b[t] for b in batches))
    grid_metrics.append(m)
  return jax.device_get((states, grid_metrics))


def _compare(runs, solo, states, grid_metrics):
  """Per member: bit_identical and the largest relative differences."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  # pylint: enable=g-import-not-at-top
  out = {}
  for i, (r, (s_state, s_metrics)) in enumerate(zip(runs, solo)):
    g_state, g_metrics = states[i], [m[i] for m in grid_metrics]
    leaves = lambda t: jax.tree.leaves(t)
    state_rel = max(_rel(a, b) for a, b in zip(leaves(g_state),
                                               leaves(s_state)))
    metrics_rel = max(_rel(a, b) for a, b in zip(leaves(g_metrics),
                                                 leaves(s_metrics)))
    exact = all(np.array_equal(a, b) for a, b in zip(
        leaves((g_state, g_metrics)), leaves((s_state, s_metrics))))
    out[f'{r.config.method}/seed{r.config.seed}'] = {
        'bit_identical': exact, 'state_max_rel_diff': state_rel,
        'metrics_max_rel_diff': metrics_rel}
  return out


def main(argv):
  del argv
  # No persistent compilation cache: each member compiled here.
  host_setup.prepare((_BATCH.value,), compilation_cache='')
  # pylint: disable=g-import-not-at-top
  import jax
  from adain_kd_jax import methods as methods_lib
  # pylint: enable=g-import-not-at-top
  wall = time.perf_counter()
  methods = list(_METHODS.value or methods_lib.METHODS)
  seeds = [int(s) for s in _SEEDS.value]
  runs = _runs(methods, seeds)
  slot_runs = [next(r for r in runs if r.config.seed == s) for s in seeds]
  batches = _batches(slot_runs)
  solo = _solo(runs, batches, seeds)
  states, grid_metrics = _grid(runs, slot_runs, batches, seeds)
  out = _compare(runs, solo, states, grid_metrics)
  result = {
      'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'teacher': 'resnet20',
      'student': 'resnet8', 'batch_size': _BATCH.value,
      'steps': _STEPS.value, 'seeds': seeds,
      'crd_negatives': _CRD_NEG.value, 'train_limit': _TRAIN_LIMIT.value,
      'grid_size': len(runs), 'members': out,
      'bit_identical': sorted({k.split('/')[0] for k, v in out.items()
                               if v['bit_identical']}),
      'wall_s': time.perf_counter() - wall}
  output.emit(result, _OUT.value)
  for r in runs:
    r.close()


if __name__ == '__main__':
  app.run(main)
