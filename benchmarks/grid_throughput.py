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

import functools
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


def main(argv):
  del argv
  host_setup.set_cpu_devices((_BATCH.value,))
  host_setup.set_xla_cpu_flags()
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from adain_kd_jax.data import augment
  from adain_kd_jax.training import grid_step
  from adain_kd_jax.training import run as run_lib
  from adain_kd_jax.training import steps
  from configs import default
  # pylint: enable=g-import-not-at-top
  wall = time.perf_counter()

  def config_of(method):
    c = default.get_config()
    c.update(method=method, model=_STUDENT.value, teacher=_TEACHER.value,
             teacher_checkpoint=_TEACHER_CKPT.value,
             batch_size=_BATCH.value, train_limit=_TRAIN_LIMIT.value,
             test_limit=500, compare_to='')
    c.crd.num_negatives = _CRD_NEG.value
    return c

  runs = {}

  def run_of(method):
    if method not in runs:
      runs[method] = run_lib.create_run(config_of(method), None)
    return runs[method]

  base = run_of('kd')
  batch = base.to_global(jax.tree.map(
      lambda x: np.asarray(x)[None], next(base.data.train_batches(0))),
                         P(None, 'data'))
  prep = run_lib.make_prep(base.config, base.info)
  copy = lambda t: jax.tree.map(lambda x: x.copy(), t)
  nbytes = lambda t: int(sum(x.nbytes for x in jax.tree.leaves(t)))
  images = augment.preprocess_train(
      batch['image'][0], jax.random.key(0), mean=prep.mean, std=prep.std,
      crop_padding=prep.crop_padding, flip=prep.flip)
  t_fwd = jax.jit(lambda tv, x: (base.distiller.teacher_outputs(tv, x), 0))
  entries = [_Entry('teacher_forward', t_fwd, (base.teacher_vars, images),
                    None)]
  _log(f'teacher_forward compiled in {entries[0].compile_s:.1f} s')
  solo, side, state_bytes = {}, {}, {}
  methods = list(dict.fromkeys(list(_MIX.value) + ['kd']))
  for method in methods:
    r = run_of(method)
    state_bytes[method] = nbytes(r.state)
    solo[method] = _Entry(f'solo/{method}', r.multi_step,
                          (copy(r.state), r.teacher_vars, None, batch), 0)
    t_out = (t_fwd(r.teacher_vars, images)[0]
             if r.distiller.teacher is not None else None)
    upd = jax.jit(lambda s, tv, b, key, t, r=r: steps.update_step(
        s, tv, b, key, distiller=r.distiller, tx=r.tx, schedule=r.schedule,
        teacher_out=t), donate_argnums=(0,))
    b0 = dict(jax.tree.map(lambda x: x[0], batch), image=images)
    side[method] = _Entry(f'side/{method}', upd, (
        copy(r.state), r.teacher_vars, b0, jax.random.key(1), t_out), 0)
    entries += [solo[method], side[method]]
    _log(f'{method}: compiled solo in {solo[method].compile_s:.1f} s, '
         f'student side in {side[method].compile_s:.1f} s')

  grids = {f'kd_x{k}': ['kd'] * int(k) for k in _KD_SIZES.value}
  grids['mix'] = list(_MIX.value)
  grid_entries = {}
  for name, members in grids.items():
    rs = [run_of(m) for m in members]
    spec = [grid_step.Member(r.distiller, r.tx, r.schedule, False, 0)
            for r in rs]
    multi = grid_step.jit_grid_multi_step(base.mesh, spec, [prep])
    grid_entries[name] = _Entry(
        f'grid/{name}', multi,
        (tuple(copy(r.state) for r in rs), (base.teacher_vars,), (batch,)), 0)
    entries.append(grid_entries[name])
    _log(f'grid {name}: compiled in {grid_entries[name].compile_s:.1f} s')

  for i in range(_STEPS.value):
    for e in entries:
      e.timed()
    _log(f'round {i + 1} of {_STEPS.value}: ' + ', '.join(
        f'{e.name} {e.times[-1]:.0f}' for e in entries))

  teacher_ms = entries[0].ms
  out_grids = {}
  for name, members in grids.items():
    e, k = grid_entries[name], len(members)
    has_teacher = any(run_of(m).distiller.teacher is not None
                      for m in members)
    solo_ms = sum(solo[m].ms for m in members)
    if k == 1:
      floor_parts = {'solo': solo[members[0]].ms}
    else:
      floor_parts = {'teacher_forward': teacher_ms if has_teacher else 0.0,
                     'student_sides': sum(side[m].ms for m in members)}
    floor_ms = sum(floor_parts.values())
    out_grids[name] = {
        'members': members, 'compile_s': e.compile_s, 'memory': e.memory,
        'memory_per_member': {key: v / k for key, v in e.memory.items()},
        'state_bytes': [state_bytes[m] for m in members],
        'ms_per_step': e.ms, 'ms_all': e.times,
        'images_per_sec': k * _BATCH.value / e.ms * 1e3,
        'images_per_sec_per_member': _BATCH.value / e.ms * 1e3,
        'solo_ms': solo_ms,
        'solo_images_per_sec': k * _BATCH.value / solo_ms * 1e3,
        'floor_ms': floor_ms, 'floor_parts_ms': floor_parts,
        'grid_over_solo': e.ms / solo_ms, 'grid_over_floor': e.ms / floor_ms}
    _log(name, json.dumps({key: out_grids[name][key] for key in (
        'ms_per_step', 'solo_ms', 'floor_ms', 'grid_over_solo',
        'grid_over_floor', 'compile_s')}))
  entry_out = lambda e: {'ms': e.ms, 'ms_all': e.times,
                         'images_per_sec': _BATCH.value / e.ms * 1e3,
                         'compile_s': e.compile_s, 'memory': e.memory}
  result = {
      'device': jax.devices()[0].device_kind, 'num_devices':
          jax.device_count(), 'jax': jax.__version__,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'teacher': _TEACHER.value, 'student': _STUDENT.value,
      'batch_size': _BATCH.value, 'image_shape': list(images.shape[1:]),
      'crd_negatives': _CRD_NEG.value, 'train_limit': _TRAIN_LIMIT.value,
      'steps': _STEPS.value, 'warmup': _WARMUP.value,
      'teacher_forward': entry_out(entries[0]),
      'solo': {m: entry_out(e) for m, e in solo.items()},
      'student_side': {m: entry_out(e) for m, e in side.items()},
      'state_bytes': state_bytes, 'grids': out_grids,
      'wall_s': time.perf_counter() - wall}
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')
  for r in runs.values():
    r.close()


if __name__ == '__main__':
  app.run(main)
