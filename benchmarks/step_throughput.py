r"""Step throughput of distillation: the jitted steps and their parts, timed.

  python benchmarks/step_throughput.py --teacher=wrn_40_2 --student=wrn_16_2 \
      --batch_sizes=64,128 --methods=none,kd,adain,adain_kd,stat_l2,fitnet \
      --points=2,3 --steps=10 --warmup=3 --dtype=float32 \
      --image_shape=32,32,3 --num_classes=100 [--out=FILE.json] \
      [--cpu_devices=2]
  python benchmarks/step_throughput.py --teacher=wrn_40_2 --student=wrn_16_2 \
      --batch_sizes=64 --methods=all --recipe=cifar100 --points=3 --steps=5

Prints one JSON object to stdout (progress goes to stderr) and writes it to
--out if given (also after each batch size, so a run that is cut off leaves
what it measured). For each batch size it times, on random data and a
randomly initialised teacher (speed does not depend on the values):

  teacher_forward  the frozen teacher's forward pass (train=False), jitted,
                   returning the logits and the features at --points;
  student_step     the training loop's jitted step (`StepParts.multi_step`,
                   one step per call) of method 'none'
                   (augmentation, student forward/backward, SGD update);
  <method>         the real jitted train step of each method in --methods
                   (`all`: every method); under --recipe=default
                   adain-type methods get one entry per insertion point
                   (`adain@2`, `adain_kd@3`, ...), fitnet and stat_l2 use all
                   of --points at once; under --recipe=cifar100 each method
                   is built as the CIFAR-100 table trains it (its published
                   weights and points), and a method with a first phase also
                   gets `<method>/first_phase`; `none` is `student_step`
                   (not re-timed);
  input_pipeline   the host input path alone: `batching.train_batches`
                   on random uint8 images plus
                   `jax.make_array_from_process_local_data` onto the data
                   sharding;
  tail@k           the frozen teacher tail from stage k: forward pass plus the
                   gradient with respect to its input h only, jitted;
  ratios           per adain-type entry X@k: `adain_over_parts` = X@k /
                   (teacher_forward + student_step + tail@k) and
                   `adain_over_kd` = X@k / kd, both in ms per step;
  over_kd          every train entry's ms per step over kd's (`none`: the
                   student's step), what a table's methods cost against KD.

A method that the recipe cannot build for the pair (e.g. FSP between
networks of other widths) is left out and listed under `refused` with its
one line.

Every timed call ends in `jax.block_until_ready` on its outputs; train steps
are chained (each gets the state the previous one returned, as the step
donates its state argument). The first call is timed on its own as
`compile_s` (compilation plus one execution); then --warmup untimed calls,
then --steps timed calls, of which the median is reported.

Each train entry's step is built as a run builds its step, by
`step_builder.build_step` (adain_kd_jax/training/step_builder.py), on the
--recipe's config (benchmarks/step_plan.py). The entries are built and timed
in benchmarks/step_entries.py.
"""

import dataclasses
import os
import sys
import time
from typing import Any

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
  sys.path.insert(0, _REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from adain_kd_jax import host_setup
from benchmarks import output as benchmark_output
# pylint: enable=g-import-not-at-top,wrong-import-position

_TEACHER = flags.DEFINE_string('teacher', 'wrn_40_2', 'Teacher model name.')
_STUDENT = flags.DEFINE_string('student', 'wrn_16_2', 'Student model name.')
_BATCH_SIZES = flags.DEFINE_list(
    'batch_sizes', ['64', '128'],
    'Global batch sizes; each must be divisible by the device count.')
_METHODS = flags.DEFINE_list(
    'methods', ['none', 'kd', 'adain', 'stat_l2', 'fitnet'],
    'Methods (methods.METHODS) whose train step is timed, or "all". adain_kd '
    '(adain plus the KD term) costs what adain costs (0.96-1.07x, '
    'benchmarks/README.md); add it here to time it.')
_RECIPE = flags.DEFINE_enum(
    'recipe', 'default', ['default', 'cifar100'],
    'The configs the steps are built on: "default" (configs/default.py with '
    'the method at --points) or "cifar100" (configs/cifar100_distill.py for '
    'the pair: each method as the CIFAR-100 table trains it, its first '
    'phase timed as its own entry).')
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
    'stays float32 (as in objective.create).')
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
_ROUNDS = flags.DEFINE_integer(
    'rounds', 1, 'Passes over the train entries, each --steps timed calls '
    'of every entry in turn; the figures are over all of them (on a shared '
    'machine a slow spell then falls on every entry alike).')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random data and init.')


def _settings(batch_sizes, *, on_cpu: bool, num_devices: int):
  """The flags as a checked `step_plan.Settings` (app.UsageError for a
  bad one)."""
  # pylint: disable=g-import-not-at-top
  from adain_kd_jax import methods as methods_lib
  from benchmarks import step_entries
  from benchmarks import step_plan
  # pylint: enable=g-import-not-at-top
  points = [int(k) for k in _POINTS.value]
  methods = list(dict.fromkeys(_METHODS.value))  # Dedup, keep order.
  if methods == ['all']:
    methods = list(methods_lib.METHODS)
  for method in methods:
    methods_lib.check_method(method)
  image_shape = tuple(int(d) for d in _IMAGE_SHAPE.value)
  if len(image_shape) != 3:
    raise app.UsageError(f'--image_shape must be H,W,C; got {image_shape}.')
  steps = _STEPS.value if _STEPS.value is not None else (3 if on_cpu else 20)
  warmup = (_WARMUP.value if _WARMUP.value is not None else
            (0 if on_cpu else 5))
  if steps < 1 or warmup < 0 or _ROUNDS.value < 1:
    raise app.UsageError(f'Need --steps >= 1, --warmup >= 0 and --rounds >= '
                         f'1; got {steps}, {warmup} and {_ROUNDS.value}.')
  for b in batch_sizes:
    if b < 1 or b % num_devices:
      raise app.UsageError(
          f'Batch size {b} must be a positive multiple of the {num_devices} '
          'devices.')
  settings = step_plan.Settings(
      batch_sizes=batch_sizes, methods=methods, points=points,
      image_shape=image_shape, num_classes=_NUM_CLASSES.value, steps=steps,
      warmup=warmup, teacher=_TEACHER.value, student=_STUDENT.value,
      dtype=_DTYPE.value, seed=_SEED.value,
      input_examples=_INPUT_EXAMPLES.value,
      steps_per_call=_STEPS_PER_CALL.value,
      recipe=_RECIPE.value, rounds=_ROUNDS.value)
  # A method the cifar100 recipe cannot build for the pair is left out,
  # with its one line in the output.
  refused = step_entries.refusals(settings)
  return dataclasses.replace(
      settings, refused=refused,
      methods=[m for m in methods if m not in refused])


def _header(settings, jax_module) -> dict[str, Any]:
  """The output's fields before the results: the machine and the flags."""
  device = jax_module.devices()[0]
  return {
      'device': {'kind': device.device_kind, 'platform': device.platform,
                 'count': jax_module.device_count(),
                 'process_count': jax_module.process_count()},
      'jax_version': jax_module.__version__,
      'host_cpus': os.cpu_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      # Nothing is stubbed: the steps import neither orbax nor tqdm. The key
      # stays, so that the output has the fields of the earlier results.
      'stubbed_modules': [],
      'teacher': settings.teacher,
      'student': settings.student,
      'dtype': settings.dtype,
      'image_shape': list(settings.image_shape),
      'num_classes': settings.num_classes,
      'methods': settings.methods,
      'points': settings.points,
      'steps': settings.steps,
      'warmup': settings.warmup,
      'recipe': settings.recipe,
      'rounds': settings.rounds,
      'refused': settings.refused,
      'results': {},
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  # Before JAX is imported: --cpu_devices, --cpu_ynnpack.
  host_setup.prepare(batch_sizes, compilation_cache='')
  # pylint: disable=g-import-not-at-top
  import jax
  from benchmarks import step_entries
  # pylint: enable=g-import-not-at-top

  # Compile times must be real compilations, not persistent-cache reads.
  try:
    jax.config.update('jax_enable_compilation_cache', False)
  except (AttributeError, KeyError, ValueError) as e:
    step_entries.log(f'WARNING: could not turn off the compilation cache: {e}')

  wall_start = time.perf_counter()
  settings = _settings(batch_sizes,
                       on_cpu=jax.devices()[0].platform == 'cpu',
                       num_devices=jax.device_count())
  bench = step_entries.Bench(settings)
  output = _header(settings, jax)
  for batch_size in batch_sizes:
    output['results'][str(batch_size)] = bench.time_batch_size(batch_size)
    output['wall_s'] = time.perf_counter() - wall_start
    if bench.process_index == 0:  # What a cut-off run leaves.
      benchmark_output.emit(output, _OUT.value, echo=False)

  output['wall_s'] = time.perf_counter() - wall_start
  if bench.errors:
    output['errors'] = bench.errors
  if bench.process_index == 0:
    benchmark_output.emit(output, _OUT.value)
  if bench.errors:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
