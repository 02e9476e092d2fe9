r"""Step throughput of distillation: the jitted steps and their parts, timed.

  python benchmarks/step_throughput.py --teacher=wrn_40_2 --student=wrn_16_2 \
      --batch_sizes=64,128 --methods=none,kd,adain,adain_kd,stat_l2,fitnet \
      --points=2,3 --steps=10 --warmup=3 --dtype=float32 \
      --image_shape=32,32,3 --num_classes=100 [--out=FILE.json] \
      [--cpu_devices=2]

Prints one JSON object to stdout (progress goes to stderr) and writes it to
--out if given (also after each batch size, so a run that is cut off leaves
what it measured). For each batch size it times, on random data and a
randomly initialised teacher (speed does not depend on the values):

  teacher_forward  the frozen teacher's forward pass (train=False), jitted,
                   returning the logits and the features at --points;
  student_step     the training loop's jitted step (`steps_lib.jit_multi_step`,
                   one step per call) of method 'none'
                   (augmentation, student forward/backward, SGD update);
  <method>         the real jitted train step of each method in --methods;
                   adain-type methods get one entry per insertion point
                   (`adain@2`, `adain_kd@3`, ...); fitnet and stat_l2 use all
                   of --points at once; `none` is `student_step` (not re-timed);
  input_pipeline   the host input path alone: `batching.train_batches`
                   on random uint8 images plus
                   `jax.make_array_from_process_local_data` onto the data
                   sharding;
  tail@k           the frozen teacher tail from stage k: forward pass plus the
                   gradient with respect to its input h only, jitted;
  ratios           per adain-type entry X@k: `adain_over_parts` = X@k /
                   (teacher_forward + student_step + tail@k) and
                   `adain_over_kd` = X@k / kd, both in ms per step.

Every timed call ends in `jax.block_until_ready` on its outputs; train steps
are chained (each gets the state the previous one returned, as the step
donates its state argument). The first call is timed on its own as
`compile_s` (compilation plus one execution); then --warmup untimed calls,
then --steps timed calls, of which the median is reported.
"""

import json
import os
import statistics
import sys
import time
from typing import Any, Callable

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import numpy as np

from adain_kd_jax import host_setup
from configs import default
# pylint: enable=g-import-not-at-top,wrong-import-position

_TEACHER = flags.DEFINE_string('teacher', 'wrn_40_2', 'Teacher model name.')
_STUDENT = flags.DEFINE_string('student', 'wrn_16_2', 'Student model name.')
_BATCH_SIZES = flags.DEFINE_list(
    'batch_sizes', ['64', '128'],
    'Global batch sizes; each must be divisible by the device count.')
_METHODS = flags.DEFINE_list(
    'methods', ['none', 'kd', 'adain', 'stat_l2', 'fitnet'],
    'Methods (distill.METHODS) whose train step is timed. adain_kd (adain '
    'plus the KD term) costs what adain costs (0.96-1.07x, benchmarks/'
    'README.md); add it here to time it.')
_POINTS = flags.DEFINE_list(
    'points', ['2', '3'],
    'Insertion points (stage numbers): one adain entry and one tail@k each.')
_STEPS = flags.DEFINE_integer(
    'steps', None, 'Timed calls per entry (default: 3 on CPU, 20 otherwise).')
_WARMUP = flags.DEFINE_integer(
    'warmup', None,
    'Untimed calls after the first (compiling) one, which runs the step '
    'once already (default: 0 on CPU, 5 '
    'otherwise).')
_DTYPE = flags.DEFINE_enum(
    'dtype', 'float32', ['float32', 'bfloat16', 'float16'],
    'config.dtype: the student and connectors compute in it; the teacher '
    'stays float32 (as in distill.create).')
_IMAGE_SHAPE = flags.DEFINE_list('image_shape', ['32', '32', '3'],
                                 'H,W,C of the (random) images.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 100, 'Number of classes.')
_INPUT_EXAMPLES = flags.DEFINE_integer(
    'input_examples', 50000,
    'Size of the random uint8 training set the input pipeline indexes into '
    '(CIFAR has 50000).')
_STEPS_PER_CALL = flags.DEFINE_integer(
    'steps_per_call', 0, 'If > 0, also time every train entry as K steps per '
    'call (lax.scan) on a training set kept on the devices (config.'
    'device_data + config.steps_per_call), reported as "<entry>xK".')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random data and init.')

_ADAIN_METHODS = ('adain', 'adain_kd')
_POINT_METHODS = ('adain', 'adain_kd', 'fitnet', 'stat_l2')
# Imported by train_lib (checkpoint writing, the training loop's progress
# bar) but never used here: where they are missing (e.g. a bare GPU machine)
# an empty placeholder module stands in, and the output says so.
_UNUSED_TRAIN_LIB_IMPORTS = ('orbax.checkpoint', 'tqdm')


def _stub_unused_imports() -> list[str]:
  """Placeholder modules for `_UNUSED_TRAIN_LIB_IMPORTS` that fail to import.

  Returns:
    The names stubbed.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  stubbed = []
  for name in _UNUSED_TRAIN_LIB_IMPORTS:
    try:
      importlib.import_module(name)
    except ImportError as e:
      _log(f'WARNING: {name} cannot be imported ({e}); a placeholder stands '
           'in (this benchmark does not use it).')
      parent = None
      parts = name.split('.')
      for i in range(len(parts)):
        full = '.'.join(parts[:i + 1])
        module = sys.modules.get(full)
        if module is None:
          module = types.ModuleType(full)
          sys.modules[full] = module
        if parent is not None:
          setattr(parent, parts[i], module)
        parent = module
      stubbed.append(name)
  return stubbed


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _time_calls(call: Callable[[], None], *, warmup: int, steps: int,
                batch_size: int) -> dict[str, Any]:
  """Times `call` (which must block on its outputs itself).

  Args:
    call: one call of the thing measured, ending in block_until_ready.
    warmup: untimed calls after the first.
    steps: timed calls.
    batch_size: images per call, for images/s.

  Returns:
    ms_per_step (median), images_per_s (from the median), ms_min, ms_max,
    compile_s (the first call: compilation plus one execution), steps.
  """
  start = time.perf_counter()
  call()
  first = time.perf_counter() - start
  for _ in range(warmup):
    call()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {
      'ms_per_step': 1e3 * median,
      'images_per_s': batch_size / median,
      'ms_min': 1e3 * min(times),
      'ms_max': 1e3 * max(times),
      'compile_s': first,
      'steps': steps,
  }


def _entry_names(methods, points):
  """(entry name, method, points) for each timed train step but 'none'."""
  entries = []
  for method in methods:
    if method == 'none':
      continue
    if method in _ADAIN_METHODS:
      entries.extend((f'{method}@{k}', method, (k,)) for k in points)
    else:  # kd ignores the points; fitnet and stat_l2 use all of them.
      entries.append((method, method, tuple(points)))
  return entries


def _ratios(result, methods, points):
  """adain_over_parts and adain_over_kd for every adain-type entry."""

  def ms(name):
    entry = result.get(name)
    if entry is None or 'ms_per_step' not in entry:
      return None
    return entry['ms_per_step']

  ratios = {}
  for method in methods:
    if method not in _ADAIN_METHODS:
      continue
    for k in points:
      name = f'{method}@{k}'
      step = ms(name)
      parts = [ms('teacher_forward'), ms('student_step'), ms(f'tail@{k}')]
      kd = ms('kd')
      ratios[name] = {
          'adain_over_parts': (step / sum(parts) if step is not None and
                               None not in parts else None),
          'adain_over_kd': (step / kd if step is not None and kd is not None
                            else None),
      }
  return ratios


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  # Before JAX is imported: --cpu_devices, --cpu_ynnpack.
  host_setup.set_cpu_devices(batch_sizes)
  host_setup.set_xla_cpu_flags()
  stubbed = _stub_unused_imports()
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from adain_kd_jax.data import batching
  from adain_kd_jax.methods import objective as distill
  from adain_kd_jax.training import config_checks
  from adain_kd_jax.training import steps as steps_lib
  # pylint: enable=g-import-not-at-top

  # Compile times must be real compilations, not persistent-cache reads.
  try:
    jax.config.update('jax_enable_compilation_cache', False)
  except (AttributeError, KeyError, ValueError) as e:
    _log(f'WARNING: could not turn off the compilation cache: {e}')

  wall_start = time.perf_counter()
  points = [int(k) for k in _POINTS.value]
  methods = list(dict.fromkeys(_METHODS.value))  # Dedup, keep order.
  for method in methods:
    distill.check_method(method)
  image_shape = tuple(int(d) for d in _IMAGE_SHAPE.value)
  if len(image_shape) != 3:
    raise app.UsageError(f'--image_shape must be H,W,C; got {image_shape}.')
  num_classes = _NUM_CLASSES.value
  on_cpu = jax.devices()[0].platform == 'cpu'
  steps = _STEPS.value if _STEPS.value is not None else (3 if on_cpu else 20)
  warmup = (_WARMUP.value if _WARMUP.value is not None else
            (0 if on_cpu else 5))
  if steps < 1 or warmup < 0:
    raise app.UsageError(f'Need --steps >= 1 and --warmup >= 0; got {steps} '
                         f'and {warmup}.')

  num_devices = jax.device_count()
  for b in batch_sizes:
    if b < 1 or b % num_devices:
      raise app.UsageError(
          f'Batch size {b} must be a positive multiple of the {num_devices} '
          'devices.')
  mesh = steps_lib.create_mesh()
  replicated = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P('data'))
  process_count = jax.process_count()
  process_index = jax.process_index()

  def to_global(local):
    return jax.make_array_from_process_local_data(data, local)

  def make_config(method, method_points):
    config = default.get_config()
    config.model = _STUDENT.value
    config.teacher = _TEACHER.value
    config.teacher_checkpoint = 'unused (random teacher)'
    config.method = method
    config.points = tuple(method_points)
    config.point_weights = (1.0,) * len(method_points)
    config.dtype = _DTYPE.value
    config_checks.check(config)
    return config

  # Mean/std only shift the normalisation; any per-channel values do.
  channels = image_shape[-1]
  prep = steps_lib.Prep(key=jax.random.key(_SEED.value + 1),
                        mean=(0.5,) * channels, std=(0.25,) * channels,
                        crop_padding=default.get_config().crop_padding,
                        flip=default.get_config().flip)
  rng = np.random.default_rng(_SEED.value)

  # Random variables come from XLA's RngBitGenerator ('rbg'): its
  # initialisers compile in half the time of the default threefry ones
  # (2.5 vs 4.9 s for wrn_40_2 here), and speed does not depend on the values.
  init_key = jax.random.key(_SEED.value, impl='rbg')

  # --- The frozen teacher: random variables, replicated ---
  teacher_distiller = distill.create(make_config('kd', points), num_classes,
                                     image_shape)
  teacher = teacher_distiller.teacher
  for k in points:
    if not 1 <= k <= teacher.num_stages:
      raise app.UsageError(
          f'--points has stage {k}, outside 1..{teacher.num_stages} for '
          f'{_TEACHER.value}.')
  teacher_vars = jax.jit(
      lambda key: teacher.init(key, jnp.zeros((1, *image_shape), jnp.float32),
                               train=False),
      out_shardings=replicated)(init_key)
  feature_names = tuple(f'stage{k}' for k in sorted(set(points)))

  def teacher_forward(variables, images):
    logits, feats = teacher.apply(variables, images, train=False)
    return logits, {name: feats[name] for name in feature_names}

  p_teacher_forward = jax.jit(teacher_forward,
                              in_shardings=(replicated, data))

  def make_tail_grad(k):
    # value_and_grad, not grad: the adain loss needs the tail's logits too,
    # and with grad alone XLA may drop a forward pass the gradient does not
    # need (all of it for a linear tail, e.g. pooling + fc).
    def tail_grad(variables, h):
      return jax.value_and_grad(lambda h: jnp.sum(teacher.apply(
          variables, h, start=k, train=False, method='tail')))(h)
    return jax.jit(tail_grad, in_shardings=(replicated, data))

  p_tails = {k: make_tail_grad(k) for k in points}

  # --- Train steps: one distiller, jitted step and state per entry ---
  # Kept across batch sizes (the state does not depend on the batch size);
  # each step donates its state, so the cache holds the newest one.
  tx, schedule = steps_lib.create_optimizer(
      make_config('none', points), steps_per_epoch=100, total_steps=10000)
  train_entries = [('student_step', 'none', tuple(points))]
  train_entries += _entry_names(methods, points)
  steppers = {}

  # Compiled state initialisers by the state's shapes: methods whose states
  # have the same shapes (e.g. none and kd, which add no parameters) share
  # one, and their states then hold the same values, which speed does not
  # depend on.
  initialisers = {}

  def stepper(name, method, method_points):
    if name not in steppers:
      config = make_config(method, method_points)
      distiller = distill.create(config, num_classes, image_shape,
                                 steps_per_epoch=100)
      init = lambda key, d=distiller: steps_lib.init_state(
          d, tx, image_shape, key)
      abstract = jax.eval_shape(init, jax.random.key(0))
      shapes = str(jax.tree.map(lambda a: (a.shape, a.dtype), abstract))
      if shapes not in initialisers:
        initialisers[shapes] = jax.jit(init, out_shardings=jax.tree.map(
            lambda _: replicated, abstract))
      state = initialisers[shapes](init_key)
      steppers[name] = {'state': state,
                        'teacher': distiller.teacher is not None,
                        'multi': steps_lib.jit_multi_step(
                            mesh, distiller, tx, schedule, prep)}
    return steppers[name]

  device = jax.devices()[0]
  output = {
      'device': {'kind': device.device_kind, 'platform': device.platform,
                 'count': num_devices, 'process_count': process_count},
      'jax_version': jax.__version__,
      'host_cpus': os.cpu_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'stubbed_modules': stubbed,
      'teacher': _TEACHER.value,
      'student': _STUDENT.value,
      'dtype': _DTYPE.value,
      'image_shape': list(image_shape),
      'num_classes': num_classes,
      'methods': methods,
      'points': points,
      'steps': steps,
      'warmup': warmup,
      'results': {},
  }
  errors = []

  def write_out():
    if _OUT.value and process_index == 0:
      with open(_OUT.value, 'w') as f:
        json.dump(output, f, indent=2)

  def measure(result, name, batch_size, make_call):
    """Times one entry; a failure is recorded and the run goes on."""
    _log(f'[batch {batch_size}] {name} ...')
    try:
      result[name] = _time_calls(make_call(), warmup=warmup, steps=steps,
                                 batch_size=batch_size)
    except Exception as e:  # pylint: disable=broad-except
      # E.g. out of memory at a large batch: keep the other figures.
      result[name] = {'error': f'{type(e).__name__}: {e}'}
      errors.append(f'batch {batch_size} {name}: {type(e).__name__}: {e}')
      _log(f'  FAILED: {type(e).__name__}: {e}')
      return
    _log(f'  {result[name]["ms_per_step"]:.2f} ms/step, '
         f'{result[name]["images_per_s"]:.1f} images/s, first call '
         f'{result[name]["compile_s"]:.1f} s')

  for batch_size in batch_sizes:
    local = batch_size // process_count
    result = {}
    output['results'][str(batch_size)] = result

    # (a) Teacher forward on normalised float images.
    images_f32 = to_global(
        rng.standard_normal((local, *image_shape)).astype(np.float32))

    def teacher_call():
      def call():
        jax.block_until_ready(p_teacher_forward(teacher_vars, images_f32))
      return call

    measure(result, 'teacher_forward', batch_size, teacher_call)

    # (b), (c) Train steps, one per call of the training loop's jitted
    # multi-step, on one device-resident batch (the input path is timed
    # separately below).
    one_step = NamedSharding(mesh, P(None, 'data'))
    batch = {
        'image': jax.make_array_from_process_local_data(
            one_step, rng.integers(0, 256, (1, local, *image_shape),
                                   dtype=np.uint8)),
        'label': jax.make_array_from_process_local_data(
            one_step, rng.integers(0, num_classes, (1, local),
                                   dtype=np.int32)),
    }
    for name, method, method_points in train_entries:

      def train_call(name=name, method=method, method_points=method_points):
        s = stepper(name, method, method_points)
        t_vars = teacher_vars if s['teacher'] else None

        def call():
          state, metrics = s['multi'](s['state'], t_vars, None, batch)
          jax.block_until_ready((state, metrics))
          s['state'] = state
          s['loss'] = metrics['loss'][-1]
        return call

      measure(result, name, batch_size, train_call)
      if 'error' not in result[name]:
        if method in _POINT_METHODS:
          result[name]['points'] = list(method_points)
        result[name]['last_loss'] = float(steppers[name]['loss'])
    if 'none' in methods:
      result['none'] = dict(result['student_step'], same_as='student_step')

    # (c') The same steps, K per call, batches gathered from a training set
    # on the devices.
    k_calls = _STEPS_PER_CALL.value
    if k_calls > 0:
      n_data = max(_INPUT_EXAMPLES.value, batch_size)
      device_data = {
          'image': jax.device_put(rng.integers(
              0, 256, (n_data, *image_shape), dtype=np.uint8), replicated),
          'label': jax.device_put(rng.integers(
              0, num_classes, (n_data,), dtype=np.int32), replicated)}
      stacked = NamedSharding(mesh, P(None, 'data'))
      index = jax.make_array_from_process_local_data(stacked, rng.integers(
          0, n_data, (k_calls, local), dtype=np.int32))
      for name, method, method_points in train_entries:

        def multi_call(name=name, method=method, method_points=method_points):
          s = stepper(name, method, method_points)
          t_vars = teacher_vars if s['teacher'] else None

          def call():
            state, metrics = s['multi'](s['state'], t_vars, device_data,
                                        {'index': index})
            jax.block_until_ready((state, metrics))
            s['state'] = state
          return call

        measure(result, f'{name}x{k_calls}', batch_size * k_calls,
                multi_call)
        entry = result[f'{name}x{k_calls}']
        if 'error' not in entry:
          entry['ms_per_train_step'] = entry['ms_per_step'] / k_calls
      del device_data

    # (d) Host input path.
    train_x = rng.integers(
        0, 256, (max(_INPUT_EXAMPLES.value, batch_size), *image_shape),
        dtype=np.uint8)
    train_y = rng.integers(0, num_classes, (len(train_x),), dtype=np.int32)

    def input_call():
      batches = batching.train_batches(
          train_x, train_y, global_batch_size=batch_size, seed=_SEED.value,
          process_index=process_index, process_count=process_count)

      def call():
        jax.block_until_ready(jax.tree.map(to_global, next(batches)))
      return call

    measure(result, 'input_pipeline', batch_size, input_call)
    if 'compile_s' in result['input_pipeline']:
      # Nothing is compiled here: the first call is just the first batch.
      result['input_pipeline']['first_call_s'] = (
          result['input_pipeline'].pop('compile_s'))
    del train_x, train_y

    # (e) Teacher tails: forward plus d/dh, from each insertion point.
    feature_shapes = jax.eval_shape(p_teacher_forward, teacher_vars,
                                    images_f32)[1]
    for k in points:

      def tail_call(k=k):
        shape = feature_shapes[f'stage{k}'].shape
        h = to_global(rng.standard_normal(
            (shape[0] // process_count, *shape[1:])).astype(np.float32))

        def call():
          jax.block_until_ready(p_tails[k](teacher_vars, h))
        return call

      measure(result, f'tail@{k}', batch_size, tail_call)

    result['ratios'] = _ratios(result, methods, points)
    output['wall_s'] = time.perf_counter() - wall_start
    write_out()

  output['wall_s'] = time.perf_counter() - wall_start
  if errors:
    output['errors'] = errors
  write_out()
  if process_index == 0:
    print(json.dumps(output, indent=2), flush=True)
  if errors:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
