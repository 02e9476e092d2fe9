r"""Grid throughput: many members in one jitted step against the same solo.

  python benchmarks/grid_throughput.py --teacher=resnet20 --student=resnet8 \
      --kd_sizes=1,2,4 --mix=none,kd,fitnet,at,stat_l2,dkd,adain,adain_kd,\
logit_mse,crd --steps=5 --warmup=1 [--out=FILE.json] [--cpu_devices=1]

Prints one JSON object (progress on stderr). On Fashion-MNIST (the first
--train_limit training images; CRD's negatives at --crd_negatives), the
configs/default.py recipe, batch --batch_size, one seed, it builds every
member as the sweep does (`run.create_run`) and times, each as the median of
--steps calls after --warmup (every call ends in block_until_ready):

  solo[m]          member m's own jitted step (`Run.multi_step`);
  student_side[m]  m's step with the teacher's outputs given
                   (`steps.update_step(teacher_out=...)`, jitted alone);
  teacher_forward  one teacher forward on a preprocessed batch;
  grids            for K kd members (--kd_sizes) and the --mix: the grid's
                   step (`grid_step.jit_grid_multi_step`) and its compile time.

Per grid: `ms_per_step`, `images_per_sec` (all members) and per member,
`solo_ms` (the members' solo steps added up), `floor_ms` (one teacher
forward plus every member's student side), `grid_over_solo` and
`grid_over_floor`.
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

from adain_kd_jax import host_setup  # --cpu_devices, --cpu_ynnpack
# pylint: enable=g-import-not-at-top,wrong-import-position

_TEACHER = flags.DEFINE_string('teacher', 'resnet20', 'Teacher model.')
_TEACHER_CKPT = flags.DEFINE_string(
    'teacher_checkpoint', 'teachers/fashion_mnist_resnet20',
    'Its export.')
_STUDENT = flags.DEFINE_string('student', 'resnet8', 'Student model.')
_KD_SIZES = flags.DEFINE_list('kd_sizes', ['1', '2', '4'],
                              'Grids of K kd members.')
_MIX = flags.DEFINE_list(
    'mix', ['none', 'kd', 'fitnet', 'at', 'stat_l2', 'dkd', 'adain',
            'adain_kd', 'logit_mse', 'crd'], 'The mixed grid.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 5120,
                                    'Training images read.')
_CRD_NEG = flags.DEFINE_integer('crd_negatives', 4096, "CRD's negatives.")
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed calls.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls after the first.')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')


def _log(*args):
  print(*args, file=sys.stderr, flush=True)


def _time(fn, carry):
  """(compile_s, median ms) of `carry = fn(carry)`."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  carry = jax.block_until_ready(fn(carry))
  compile_s = time.perf_counter() - start
  for _ in range(_WARMUP.value):
    carry = jax.block_until_ready(fn(carry))
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    carry = jax.block_until_ready(fn(carry))
    times.append(1e3 * (time.perf_counter() - start))
  return compile_s, statistics.median(times)


def main(argv):
  del argv
  host_setup.set_cpu_devices((_BATCH.value,))
  host_setup.set_xla_cpu_flags()
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from adain_kd_jax import grid_step
  from adain_kd_jax import run as run_lib
  from adain_kd_jax import steps
  from adain_kd_jax.data import augment
  from configs import default
  # pylint: enable=g-import-not-at-top

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
  images = augment.preprocess_train(
      batch['image'][0], jax.random.key(0), mean=prep.mean, std=prep.std,
      crop_padding=prep.crop_padding, flip=prep.flip)
  t_fwd = jax.jit(base.distiller.teacher_outputs)
  _, teacher_ms = _time(lambda c: t_fwd(base.teacher_vars, images), None)
  _log(f'teacher_forward {teacher_ms:.1f} ms')
  solo, side = {}, {}
  for method in dict.fromkeys(list(_MIX.value) + ['kd']):
    r = run_of(method)
    _, solo[method] = _time(lambda s, r=r: r.multi_step(
        s, r.teacher_vars, None, batch)[0], copy(r.state))
    t_out = (t_fwd(r.teacher_vars, images) if r.distiller.teacher is not None
             else None)
    upd = jax.jit(functools.partial(
        steps.update_step, distiller=r.distiller, tx=r.tx,
        schedule=r.schedule), donate_argnums=(0,))
    b0 = dict(jax.tree.map(lambda x: x[0], batch), image=images)
    _, side[method] = _time(lambda s, r=r, upd=upd, t_out=t_out: upd(
        s, r.teacher_vars, b0, jax.random.key(1), teacher_out=t_out)[0],
                            copy(r.state))
    _log(f'{method}: solo {solo[method]:.1f} ms, student side '
         f'{side[method]:.1f} ms')

  def time_grid(methods):
    rs = [run_of(m) for m in methods]
    members = [grid_step.Member(r.distiller, r.tx, r.schedule, False, 0)
               for r in rs]
    multi = grid_step.jit_grid_multi_step(base.mesh, members, [prep])
    compile_s, ms = _time(
        lambda s: multi(s, (base.teacher_vars,), (batch,))[0],
        tuple(copy(r.state) for r in rs))
    solo_ms = sum(solo[m] for m in methods)
    has_teacher = any(r.distiller.teacher is not None for r in rs)
    floor_ms = (teacher_ms if has_teacher and len(rs) > 1 else 0.0) + sum(
        side[m] if len(rs) > 1 else solo[m] for m in methods)
    k = len(methods)
    out = {'members': list(methods), 'compile_s': compile_s,
           'ms_per_step': ms,
           'images_per_sec': k * _BATCH.value / ms * 1e3,
           'images_per_sec_per_member': _BATCH.value / ms * 1e3,
           'solo_ms': solo_ms,
           'solo_images_per_sec': k * _BATCH.value / solo_ms * 1e3,
           'floor_ms': floor_ms, 'grid_over_solo': ms / solo_ms,
           'grid_over_floor': ms / floor_ms}
    _log(json.dumps(out))
    return out

  grids = {f'kd_x{k}': time_grid(['kd'] * int(k)) for k in _KD_SIZES.value}
  grids['mix'] = time_grid(list(_MIX.value))
  result = {
      'device': jax.devices()[0].device_kind, 'num_devices':
          jax.device_count(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'teacher': _TEACHER.value, 'student': _STUDENT.value,
      'batch_size': _BATCH.value, 'crd_negatives': _CRD_NEG.value,
      'train_limit': _TRAIN_LIMIT.value, 'steps': _STEPS.value,
      'teacher_forward_ms': teacher_ms, 'solo_ms': solo,
      'student_side_ms': side, 'grids': grids}
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')
  for r in runs.values():
    r.close()


if __name__ == '__main__':
  app.run(main)
