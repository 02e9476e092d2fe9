r"""Grid throughput: many members in one jitted step against the same solo.

  python benchmarks/grid_throughput.py --teacher=resnet20 --student=resnet8 \
      --kd_sizes=1,2,4,9 --mix=none,kd,fitnet,at,stat_l2,dkd,adain,adain_kd,\
logit_mse,crd --steps=5 --warmup=1 [--out=FILE.json] [--cpu_devices=1]

Prints one JSON object (progress on stderr). On Fashion-MNIST (the first
--train_limit training images; CRD's negatives at --crd_negatives), the
configs/default.py recipe, batch --batch_size, one seed, it builds every
member as the sweep does (`run.create_run`) and times:

  solo[m]          member m's own jitted step (`Run.multi_step`);
  student_side[m]  m's step with the teacher's outputs given
                   (`steps.update_step(teacher_out=...)`, jitted alone);
  teacher_forward  one teacher forward on a preprocessed batch;
  grids            for K kd members (--kd_sizes) and the --mix: the grid's
                   step (`grid_step.jit_grid_multi_step`).

Every entry is compiled first (`jit(...).lower(...).compile()`: `compile_s`
is compilation alone, no execution; `memory` is the executable's
`memory_analysis()`), then called once and --warmup times untimed, then
--steps rounds in each of which every entry (grids, solo steps, student sides,
the teacher) runs once in turn, so that a change in the machine's load falls
on all of them alike. Each figure is the median over the rounds of one call
ending in `block_until_ready`.

Per grid: `ms_per_step`, `images_per_sec` (all members) and per member,
`solo_ms` (the members' solo steps added up), `floor_ms` (one teacher
forward plus every member's student side; a grid of one: its solo step),
`grid_over_solo`, `grid_over_floor`, `compile_s`, the executable's memory and
each member's state bytes (`state_bytes`: parameters, batch statistics,
optimiser and method state such as CRD's memory bank).
"""

import json
import os
import statistics
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

_TEACHER = flags.DEFINE_string('teacher', 'resnet20', 'Teacher model.')
_TEACHER_CKPT = flags.DEFINE_string(
    'teacher_checkpoint', 'teachers/fashion_mnist_resnet20',
    'Its export.')
_STUDENT = flags.DEFINE_string('student', 'resnet8', 'Student model.')
_KD_SIZES = flags.DEFINE_list('kd_sizes', ['1', '2', '4', '9'],
                              'Grids of K kd members.')
_MIX = flags.DEFINE_list(
    'mix', ['none', 'kd', 'fitnet', 'at', 'stat_l2', 'dkd', 'adain',
            'adain_kd', 'logit_mse', 'crd'], 'The mixed grid.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', '', "config.data_dir: the data set's files ('': where runs "
    'look by default).')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 5120,
                                    'Training images read.')
_CRD_NEG = flags.DEFINE_integer('crd_negatives', 4096, "CRD's negatives.")
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed rounds.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls after the first.')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')


def _log(*args):
  print(*args, file=sys.stderr, flush=True)


def _memory(compiled):
  """The executable's memory_analysis() in bytes ({} where unavailable)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  return {k: int(getattr(m, f'{k}_size_in_bytes')) for k in (
      'argument', 'output', 'alias', 'temp', 'generated_code')
          if hasattr(m, f'{k}_size_in_bytes')}


class _Entry:
  """A compiled function, called as `carry = fn(carry)`, timed per round."""

  def __init__(self, name, jitted, args, carry_index):
    import jax  # pylint: disable=g-import-not-at-top
    self.name, self.args, self.carry_index = name, list(args), carry_index
    start = time.perf_counter()
    self.compiled = jitted.lower(*self.args).compile()
    self.compile_s = time.perf_counter() - start
    self.memory = _memory(self.compiled)
    self.times = []
    for _ in range(1 + _WARMUP.value):
      self.call()
    del jax

  def call(self):
    import jax  # pylint: disable=g-import-not-at-top
    out = jax.block_until_ready(self.compiled(*self.args))
    if self.carry_index is not None:
      self.args[self.carry_index] = out[0]

  def timed(self):
    start = time.perf_counter()
    self.call()
    self.times.append(1e3 * (time.perf_counter() - start))

  @property
  def ms(self):
    return statistics.median(self.times)


def _copy(tree):
  """A copy of every array (the steps donate their states)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: x.copy(), tree)


def _nbytes(tree):
  """The bytes of every array in `tree`."""
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(x.nbytes for x in jax.tree.leaves(tree)))


class _Runs:
  """One run per method, built on first use as the sweep builds its runs."""

  def __init__(self):
    self._runs = {}

  def __call__(self, method):
    # pylint: disable=g-import-not-at-top
    from adain_kd_jax.training import run as run_lib
    from configs import default
    # pylint: enable=g-import-not-at-top
    if method not in self._runs:
      c = default.get_config()
      c.update(method=method, model=_STUDENT.value, teacher=_TEACHER.value,
               teacher_checkpoint=_TEACHER_CKPT.value,
               batch_size=_BATCH.value, train_limit=_TRAIN_LIMIT.value,
               test_limit=500, compare_to='', data_dir=_DATA_DIR.value)
      c.crd.num_negatives = _CRD_NEG.value
      self._runs[method] = run_lib.create_run(c, None)
    return self._runs[method]

  def close(self):
    for r in self._runs.values():
      r.close()


def _first_batch(base):
  """(the first training batch as one step, its augmented images, the
  run's preprocessing) of the run `base`."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from adain_kd_jax.data import augment
  from adain_kd_jax.training import run as run_lib
  from adain_kd_jax.training import steps
  # pylint: enable=g-import-not-at-top
  batch = steps.to_global(base.mesh, jax.tree.map(
      lambda x: np.asarray(x)[None], next(base.data.train_batches(0))),
                          P(None, 'data'))
  prep = run_lib.make_preprocess(base.config, base.dataset_info)
  images = augment.preprocess_train(
      batch['image'][0], jax.random.key(0), mean=prep.mean, std=prep.std,
      crop_padding=prep.crop_padding, flip=prep.flip)
  return batch, images, prep


def _solo_and_side(runs, methods, t_fwd, batch, images):
  """({method: solo entry}, {method: student-side entry}, {method: state
  bytes}): each method's own step, and its step with the teacher's outputs
  given."""
  # pylint: disable=g-import-not-at-top
  import jax
  from adain_kd_jax.training import steps
  # pylint: enable=g-import-not-at-top
  solo, side, state_bytes = {}, {}, {}
  for method in methods:
    r = runs(method)
    state_bytes[method] = _nbytes(r.state)
    solo[method] = _Entry(f'solo/{method}', r.multi_step,
                          (_copy(r.state), r.teacher_vars, None, batch), 0)
    t_out = (t_fwd(r.teacher_vars, images)[0]
             if r.distiller.teacher is not None else None)
    upd = jax.jit(lambda s, tv, b, key, t, r=r: steps.update_step(
        s, tv, b, key, distiller=r.distiller, tx=r.tx, schedule=r.schedule,
        teacher_out=t), donate_argnums=(0,))
    b0 = dict(jax.tree.map(lambda x: x[0], batch), image=images)
    side[method] = _Entry(f'side/{method}', upd, (
        _copy(r.state), r.teacher_vars, b0, jax.random.key(1), t_out), 0)
    _log(f'{method}: compiled solo in {solo[method].compile_s:.1f} s, '
         f'student side in {side[method].compile_s:.1f} s')
  return solo, side, state_bytes


def _grid_entries(runs, grids, base, prep, batch):
  """{grid name: the grid's step as an entry} for `grids` ({name:
  [method of each member]})."""
  # pylint: disable-next=g-import-not-at-top
  from adain_kd_jax.training import grid_step
  grid_entries = {}
  for name, members in grids.items():
    rs = [runs(m) for m in members]
    spec = [grid_step.MemberStep(r.distiller, r.tx, r.schedule, False)
            for r in rs]
    multi = grid_step.jit_grid_multi_step(base.mesh, spec, [prep],
                                          [list(range(len(rs)))])
    grid_entries[name] = _Entry(
        f'grid/{name}', multi,
        (tuple(_copy(r.state) for r in rs), (base.teacher_vars,), (batch,)), 0)
    _log(f'grid {name}: compiled in {grid_entries[name].compile_s:.1f} s')
  return grid_entries


def _grid_figures(name, members, entry, runs, solo, side, teacher_ms,
                  state_bytes):
  """A grid's figures beside its members solo and the floor."""
  k = len(members)
  has_teacher = any(runs(m).distiller.teacher is not None for m in members)
  solo_ms = sum(solo[m].ms for m in members)
  if k == 1:
    floor_parts = {'solo': solo[members[0]].ms}
  else:
    floor_parts = {'teacher_forward': teacher_ms if has_teacher else 0.0,
                   'student_sides': sum(side[m].ms for m in members)}
  floor_ms = sum(floor_parts.values())
  figures = {
      'members': members, 'compile_s': entry.compile_s,
      'memory': entry.memory,
      'memory_per_member': {key: v / k for key, v in entry.memory.items()},
      'state_bytes': [state_bytes[m] for m in members],
      'ms_per_step': entry.ms, 'ms_all': entry.times,
      'images_per_sec': k * _BATCH.value / entry.ms * 1e3,
      'images_per_sec_per_member': _BATCH.value / entry.ms * 1e3,
      'solo_ms': solo_ms,
      'solo_images_per_sec': k * _BATCH.value / solo_ms * 1e3,
      'floor_ms': floor_ms, 'floor_parts_ms': floor_parts,
      'grid_over_solo': entry.ms / solo_ms,
      'grid_over_floor': entry.ms / floor_ms}
  _log(name, json.dumps({key: figures[key] for key in (
      'ms_per_step', 'solo_ms', 'floor_ms', 'grid_over_solo',
      'grid_over_floor', 'compile_s')}))
  return figures


def _entry_out(e):
  return {'ms': e.ms, 'ms_all': e.times,
          'images_per_sec': _BATCH.value / e.ms * 1e3,
          'compile_s': e.compile_s, 'memory': e.memory}


def main(argv):
  del argv
  host_setup.set_cpu_devices((_BATCH.value,))
  host_setup.set_xla_cpu_flags()
  import jax  # pylint: disable=g-import-not-at-top
  wall = time.perf_counter()
  runs = _Runs()
  base = runs('kd')
  batch, images, prep = _first_batch(base)
  t_fwd = jax.jit(lambda tv, x: (base.distiller.teacher_outputs(tv, x), 0))
  teacher = _Entry('teacher_forward', t_fwd, (base.teacher_vars, images),
                   None)
  _log(f'teacher_forward compiled in {teacher.compile_s:.1f} s')
  methods = list(dict.fromkeys(list(_MIX.value) + ['kd']))
  solo, side, state_bytes = _solo_and_side(runs, methods, t_fwd, batch,
                                           images)
  grids = {f'kd_x{k}': ['kd'] * int(k) for k in _KD_SIZES.value}
  grids['mix'] = list(_MIX.value)
  grid_entries = _grid_entries(runs, grids, base, prep, batch)
  entries = [teacher] + [e for m in methods for e in (solo[m], side[m])]
  entries += grid_entries.values()
  for i in range(_STEPS.value):
    for e in entries:
      e.timed()
    _log(f'round {i + 1} of {_STEPS.value}: ' + ', '.join(
        f'{e.name} {e.times[-1]:.0f}' for e in entries))

  out_grids = {name: _grid_figures(name, members, grid_entries[name], runs,
                                   solo, side, teacher.ms, state_bytes)
               for name, members in grids.items()}
  result = {
      'device': jax.devices()[0].device_kind, 'num_devices':
          jax.device_count(), 'jax': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'teacher': _TEACHER.value, 'student': _STUDENT.value,
      'batch_size': _BATCH.value, 'image_shape': list(images.shape[1:]),
      'crd_negatives': _CRD_NEG.value, 'train_limit': _TRAIN_LIMIT.value,
      'steps': _STEPS.value, 'warmup': _WARMUP.value,
      'teacher_forward': _entry_out(teacher),
      'solo': {m: _entry_out(e) for m, e in solo.items()},
      'student_side': {m: _entry_out(e) for m, e in side.items()},
      'state_bytes': state_bytes, 'grids': out_grids,
      'wall_s': time.perf_counter() - wall}
  output.emit(result, _OUT.value)
  runs.close()


if __name__ == '__main__':
  app.run(main)
