r"""Grid layouts: a methods x seeds table as a loop of members against vmap.

  python benchmarks/grid_layout.py --teacher=resnet20 --student=resnet8 \
      --layout_methods=none,kd,adain --seeds=0,1,2,3 --steps=5 --warmup=1 \
      [--out=FILE.json]

Prints one JSON object (progress on stderr). Every member is built as the
sweep builds it (`run.create_run`, the grid_throughput.py settings: the
configs/default.py recipe on the first --train_limit Fashion-MNIST images,
batch --batch_size), one seed slot per --seeds, and the table's step is
compiled twice with `grid_step.jit_grid_multi_step`: layout 'loop' (each
seed's members in turn) and 'vmap' (one seed's program mapped over the
seeds). Timing as grid_throughput.py: compilation alone, then rounds in
which each layout runs once in turn, the median of each.

Figures: `ms_per_step`, `images_per_sec` (all members), `compile_s` and
the executable's memory per layout, and `vmap_over_loop` (< 1: vmap is
faster), which `config.grid_layout`'s default follows per platform.
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
# Its flags (teacher, student, batch size, data, rounds, --out) and timer.
from benchmarks import grid_throughput as gt
from benchmarks import output
# pylint: enable=g-import-not-at-top,wrong-import-position

_METHODS = flags.DEFINE_list('layout_methods', ['none', 'kd', 'adain'],
                             'The methods of the table (per seed).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2', '3'],
                           'The seeds of the table (one slot each).')


def _runs(methods, seeds):
  """One run per (method, seed), seed-major, as the sweep builds them."""
  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import run as run_lib
  from configs import default
  # pylint: enable=g-import-not-at-top
  runs = []
  for seed in seeds:
    for method in methods:
      c = default.get_config()
      c.update(method=method, model=gt._STUDENT.value,
               teacher=gt._TEACHER.value,
               teacher_checkpoint=gt._TEACHER_CKPT.value,
               batch_size=gt._BATCH.value, train_limit=gt._TRAIN_LIMIT.value,
               test_limit=500, compare_to='', seed=seed)
      c.crd.num_negatives = gt._CRD_NEG.value
      runs.append(run_lib.create_run(c, None))
  return runs


def _table_args(runs, built):
  """(states, teacher variables per slot, one batch per slot) for the
  grid's steps `built` (grid_step.GridSteps)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from adain_kd_jax.training import steps
  # pylint: enable=g-import-not-at-top
  batches = tuple(steps.to_global(r.mesh, jax.tree.map(
      lambda x: np.asarray(x)[None], next(r.data.train_batches(0))),
                                  P(None, 'data'))
                  for r in built.slot_runs)
  return gt._copy(tuple(r.state for r in runs)), built.teacher_vars, batches


def main(argv):
  del argv
  # Compile times must be real compilations: no persistent cache.
  host_setup.prepare((gt._BATCH.value,), compilation_cache='')
  # pylint: disable=g-import-not-at-top
  import jax
  from adain_kd_jax.training import grid_step
  # pylint: enable=g-import-not-at-top
  wall = time.perf_counter()
  methods, seeds = list(_METHODS.value), [int(s) for s in _SEEDS.value]
  runs = _runs(methods, seeds)
  entries = {}
  for layout in ('loop', 'vmap'):
    # The steps the grid trains with (grid.train_grid builds them so).
    for r in runs:
      r.config.grid_layout = layout
    built = grid_step.build_grid_steps(runs)
    if built.layout != layout:
      raise SystemExit('--seeds/--layout_methods: the vmap layout cannot '
                       'stack this table (the line above says why).')
    entries[layout] = gt._Entry(layout, built.multi_step,
                                _table_args(runs, built), 0)
    gt._log(f'{layout}: compiled in {entries[layout].compile_s:.1f} s')
  for i in range(gt._STEPS.value):
    for e in entries.values():
      e.timed()
    gt._log(f'round {i + 1} of {gt._STEPS.value}: ' + ', '.join(
        f'{e.name} {e.times[-1]:.0f} ms' for e in entries.values()))
  size = len(runs)
  result = {
      'device': jax.devices()[0].device_kind,
      'num_devices': jax.device_count(), 'jax': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'teacher': gt._TEACHER.value, 'student': gt._STUDENT.value,
      'batch_size': gt._BATCH.value, 'methods': methods, 'seeds': seeds,
      'steps': gt._STEPS.value, 'warmup': gt._WARMUP.value,
      'layouts': {name: {
          'ms_per_step': e.ms, 'ms_all': e.times,
          'images_per_sec': size * gt._BATCH.value / e.ms * 1e3,
          'compile_s': e.compile_s, 'memory': e.memory}
                  for name, e in entries.items()},
      'vmap_over_loop': entries['vmap'].ms / entries['loop'].ms,
      'wall_s': time.perf_counter() - wall}
  output.emit(result, gt._OUT.value)
  for r in runs:
    r.close()


if __name__ == '__main__':
  app.run(main)
