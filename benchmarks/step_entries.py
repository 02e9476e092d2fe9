"""The entries of benchmarks/step_throughput.py: what it builds and times.

`Bench(settings)` builds the random teacher and, on first use, each train
entry's step as runs build theirs (`step_builder.build_step`);
`Bench.time_batch_size(b)` times every entry at batch size b. Imports JAX:
step_throughput.py imports this module only after its XLA flags are set.
"""

import functools
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from adain_kd_jax.data import batching
from adain_kd_jax.methods import objective
from adain_kd_jax.training import step_builder
from adain_kd_jax.training import steps as steps_lib
from benchmarks import step_plan
from benchmarks.step_plan import POINT_METHODS
from benchmarks.step_plan import Settings
from configs import default

# The optimiser's and the terms' epoch length and the schedule's length:
# speed does not depend on them.
_STEPS_PER_EPOCH = 100
_TOTAL_STEPS = 10000


def log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def time_calls(call: Callable[[], None], *, warmup: int, steps: int,
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
  return {**figures(timed_calls(call, steps), batch_size), 'compile_s': first}


def timed_calls(call: Callable[[], None], steps: int) -> list[float]:
  """Seconds of each of `steps` calls of `call`."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return times


def figures(times: list[float], batch_size: int) -> dict[str, Any]:
  """ms_per_step (the median), images_per_s, ms_min, ms_max, steps and
  every call's times_ms, in call order."""
  median = statistics.median(times)
  return {'ms_per_step': 1e3 * median, 'images_per_s': batch_size / median,
          'ms_min': 1e3 * min(times), 'ms_max': 1e3 * max(times),
          'steps': len(times), 'times_ms': [1e3 * t for t in times]}


def _tail_grad(teacher, k, replicated, sharded):
  """The teacher's tail from stage k, forward plus d/dh, jitted."""

  # value_and_grad, not grad: the adain loss needs the tail's logits too,
  # and with grad alone XLA may drop a forward pass the gradient does not
  # need (all of it for a linear tail, e.g. pooling + fc).
  def tail_grad(variables, h):
    return jax.value_and_grad(lambda h: jnp.sum(teacher.apply(
        variables, h, start=k, train=False, method='tail')))(h)

  return jax.jit(tail_grad, in_shardings=(replicated, sharded))


def refusals(settings: Settings) -> dict[str, str]:
  """{method: the one line refusing it} for each method of the cifar100
  recipe that its config check or its terms' shape checks
  (`objective.create`) refuse for the pair; {} under the default recipe."""
  refused = {}
  for method in settings.methods if settings.recipe == 'cifar100' else ():
    try:
      objective.create(step_plan.make_config(settings, method, None),
                       settings.num_classes, settings.image_shape)
    except ValueError as e:
      refused[method] = str(e)
  return refused


class Teacher:
  """The frozen teacher on random variables, replicated: its jitted forward
  pass (logits and the features at the points) and its tails
  (`_tail_grad`, one per point)."""

  def __init__(self, settings: Settings, replicated, sharded, init_key):
    image_shape, points = settings.image_shape, settings.points
    teacher = objective.create(step_plan.make_config(settings, 'kd', points),
                             settings.num_classes, image_shape).teacher
    for k in points:
      if not 1 <= k <= teacher.num_stages:
        raise app.UsageError(
            f'--points has stage {k}, outside 1..{teacher.num_stages} for '
            f'{settings.teacher}.')
    self.variables = jax.jit(
        lambda key: teacher.init(
            key, jnp.zeros((1, *image_shape), jnp.float32), train=False),
        out_shardings=replicated)(init_key)
    feature_names = tuple(f'stage{k}' for k in sorted(set(points)))

    def forward(variables, images):
      logits, feats = teacher.apply(variables, images, train=False)
      return logits, {name: feats[name] for name in feature_names}

    self.forward = jax.jit(forward, in_shardings=(replicated, sharded))
    self.tails = {k: _tail_grad(teacher, k, replicated, sharded)
                  for k in points}


class Bench:
  """What the entries share: the mesh, the random teacher, one built step
  per train entry, the generator of the random data and the errors."""

  def __init__(self, settings: Settings):
    self.settings = settings
    self.mesh = steps_lib.create_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.sharded = NamedSharding(self.mesh, P('data'))
    self.stacked = NamedSharding(self.mesh, P(None, 'data'))
    self.process_count = jax.process_count()
    self.process_index = jax.process_index()
    # Mean/std only shift the normalisation; any per-channel values do.
    channels = settings.image_shape[-1]
    self.prep = steps_lib.Preprocess(
        key=jax.random.key(settings.seed + 1), mean=(0.5,) * channels,
        std=(0.25,) * channels,
        crop_padding=default.get_config().crop_padding,
        flip=default.get_config().flip)
    self.rng = np.random.default_rng(settings.seed)
    # The training set's labels, for CRD's class-aware negatives (its own
    # generator: the other entries' random data stay as they were).
    self.train_labels = np.random.default_rng(settings.seed + 2).integers(
        0, settings.num_classes, settings.input_examples, dtype=np.int32)
    # Random variables come from XLA's RngBitGenerator ('rbg'): its
    # initialisers compile in half the time of the default threefry ones
    # (2.5 vs 4.9 s for wrn_40_2 here), and speed does not depend on the
    # values.
    self.init_key = jax.random.key(settings.seed, impl='rbg')
    self.teacher = Teacher(settings, self.replicated, self.sharded,
                           self.init_key)
    self.train_entries = [step_plan.Entry('student_step', 'none',
                                          tuple(settings.points))]
    self.train_entries += step_plan.entry_names(
        settings.methods, settings.points, settings.recipe)
    self.steppers = {}
    # Compiled state initialisers by the state's shapes (see `_stepper`).
    self.initialisers = {}
    self.errors = []

  def to_global(self, local):
    """Host-local arrays -> global arrays sharded over 'data'."""
    return jax.make_array_from_process_local_data(self.sharded, local)

  def measure(self, result, name, batch_size, make_call):
    """Times one entry and returns its call (None if it failed: the
    failure is recorded and the run goes on)."""
    log(f'[batch {batch_size}] {name} ...')
    try:
      call = make_call()
      result[name] = time_calls(call, warmup=self.settings.warmup,
                                steps=self.settings.steps,
                                batch_size=batch_size)
    except Exception as e:  # pylint: disable=broad-except
      # E.g. out of memory at a large batch: keep the other figures.
      result[name] = {'error': f'{type(e).__name__}: {e}'}
      self.errors.append(
          f'batch {batch_size} {name}: {type(e).__name__}: {e}')
      log(f'  FAILED: {type(e).__name__}: {e}')
      return None
    log(f'  {result[name]["ms_per_step"]:.2f} ms/step, '
        f'{result[name]["images_per_s"]:.1f} images/s, first call '
        f'{result[name]["compile_s"]:.1f} s')
    return call

  def time_batch_size(self, batch_size) -> dict[str, Any]:
    """Every entry at `batch_size`: {entry name: figures, 'ratios': ...}."""
    s, local = self.settings, batch_size // self.process_count
    result = {}
    # (a) Teacher forward on normalised float images.
    images_f32 = self.to_global(self.rng.standard_normal(
        (local, *s.image_shape)).astype(np.float32))

    def teacher_call():
      def call():
        jax.block_until_ready(self.teacher.forward(self.teacher.variables,
                                                   images_f32))
      return call

    self.measure(result, 'teacher_forward', batch_size, teacher_call)
    self._time_train_steps(result, batch_size, local)
    if s.steps_per_call > 0:
      self._time_multi_steps(result, batch_size, local)
    self._time_input_pipeline(result, batch_size)
    self._time_tails(result, batch_size, images_f32)
    result['ratios'] = step_plan.ratios(result, s.methods, s.points)
    result['over_kd'] = step_plan.over_kd(result, self.train_entries[1:])
    return result

  def _stepper(self, entry: step_plan.Entry):
    """A train entry's step (`step_builder.build_step`) and newest state.

    Built on first use and kept across batch sizes (the state does not
    depend on the batch size); each step donates its state, so this holds
    the newest one. Entries whose states have the same shapes (e.g. none and
    kd, which add no parameters) share one compiled initialiser, and their
    states then hold the same values, which speed does not depend on. The
    main phase of a method with a first phase starts at the step where the
    first phase ends (the one program picks its phase from `state.step`).
    """
    if entry.name not in self.steppers:
      s = self.settings
      parts = step_builder.build_step(
          step_plan.make_config(s, entry.method, entry.points), self.mesh,
          num_classes=s.num_classes, image_shape=s.image_shape,
          prep=self.prep, steps_per_epoch=_STEPS_PER_EPOCH,
          total_steps=_TOTAL_STEPS, num_train=s.input_examples,
          train_labels=self.train_labels)
      shapes = str(jax.tree.map(lambda a: (a.shape, a.dtype),
                                parts.state_shapes))
      init_state = self.initialisers.setdefault(shapes, parts.init_state)
      state = init_state(self.init_key)
      first_steps = parts.distiller.init_steps
      if first_steps and entry.phase != step_plan.FIRST_PHASE:
        state = state.replace(step=jax.device_put(
            jnp.asarray(first_steps, state.step.dtype), state.step.sharding))
      self.steppers[entry.name] = {
          'state': state, 'teacher': parts.distiller.teacher is not None,
          'multi': parts.multi_step, 'first_phase_steps': first_steps}
    return self.steppers[entry.name]

  def _train_call(self, entry, device_data, batches, keep_loss):
    """`measure`'s make_call for `entry`'s step: each call takes the state
    the previous one returned (with `keep_loss`, and keeps its last loss)."""
    stepper = self._stepper(entry)
    t_vars = self.teacher.variables if stepper['teacher'] else None

    def call():
      state, metrics = stepper['multi'](stepper['state'], t_vars,
                                        device_data, batches)
      jax.block_until_ready((state, metrics))
      stepper['state'] = state
      if keep_loss:
        stepper['loss'] = metrics['loss'][-1]
    return call

  def _time_train_steps(self, result, batch_size, local):
    """(b), (c) Train steps, one per call of the training loop's jitted
    multi-step, on one device-resident batch (the input path is timed
    separately, `_time_input_pipeline`)."""
    s = self.settings
    batch = {
        'image': jax.make_array_from_process_local_data(
            self.stacked, self.rng.integers(
                0, 256, (1, local, *s.image_shape), dtype=np.uint8)),
        'label': jax.make_array_from_process_local_data(
            self.stacked, self.rng.integers(0, s.num_classes, (1, local),
                                            dtype=np.int32)),
        # The examples' positions in the training set (CRD's memory bank).
        'index': jax.make_array_from_process_local_data(
            self.stacked, self.rng.integers(0, s.input_examples, (1, local),
                                            dtype=np.int32)),
    }
    calls = {}
    for entry in self.train_entries:
      name = entry.name
      call = self.measure(result, name, batch_size, functools.partial(
          self._train_call, entry, None, batch, keep_loss=True))
      if call is not None:
        calls[name] = call
    self._more_rounds(result, batch_size, calls)
    for entry in self.train_entries:
      name = entry.name
      if 'error' not in result[name]:
        if entry.points is not None and entry.method in POINT_METHODS:
          result[name]['points'] = list(entry.points)
        stepper = self.steppers[name]
        if stepper['first_phase_steps']:
          result[name]['first_phase_steps'] = stepper['first_phase_steps']
        result[name]['last_loss'] = float(stepper['loss'])
    if 'none' in s.methods:
      result['none'] = dict(result['student_step'], same_as='student_step')

  def _more_rounds(self, result, batch_size, calls):
    """Rounds 2 .. --rounds: --steps more timed calls of every train entry,
    entry after entry, so that a slow spell of a shared machine falls on
    them alike; the figures are then over every round's calls."""
    times = {name: [] for name in calls}
    for r in range(2, self.settings.rounds + 1):
      log(f'[batch {batch_size}] round {r} of {self.settings.rounds}')
      for name, call in calls.items():
        times[name] += timed_calls(call, self.settings.steps)
    for name, extra in times.items():
      if extra:
        first = [t / 1e3 for t in result[name]['times_ms']]
        result[name].update(figures(first + extra, batch_size),
                            rounds=self.settings.rounds)

  def _time_multi_steps(self, result, batch_size, local):
    """(c') The same steps, K (steps_per_call) per call, batches gathered
    from a training set on the devices."""
    s, k_calls = self.settings, self.settings.steps_per_call
    n_data = max(s.input_examples, batch_size)
    device_data = {
        'image': jax.device_put(self.rng.integers(
            0, 256, (n_data, *s.image_shape), dtype=np.uint8),
                                self.replicated),
        'label': jax.device_put(self.rng.integers(
            0, s.num_classes, (n_data,), dtype=np.int32), self.replicated)}
    index = jax.make_array_from_process_local_data(
        self.stacked, self.rng.integers(0, n_data, (k_calls, local),
                                        dtype=np.int32))
    for entry in self.train_entries:
      name = f'{entry.name}x{k_calls}'
      self.measure(result, name, batch_size * k_calls, functools.partial(
          self._train_call, entry, device_data, {'index': index},
          keep_loss=False))
      if 'error' not in result[name]:
        result[name]['ms_per_train_step'] = (result[name]['ms_per_step']
                                             / k_calls)

  def _time_input_pipeline(self, result, batch_size):
    """(d) Host input path: `batching.train_batches` on random uint8 images,
    then onto the data sharding."""
    s = self.settings
    train_x = self.rng.integers(
        0, 256, (max(s.input_examples, batch_size), *s.image_shape),
        dtype=np.uint8)
    train_y = self.rng.integers(0, s.num_classes, (len(train_x),),
                                dtype=np.int32)

    def input_call():
      batches = batching.train_batches(
          train_x, train_y, global_batch_size=batch_size, seed=s.seed,
          process_index=self.process_index, process_count=self.process_count)

      def call():
        jax.block_until_ready(jax.tree.map(self.to_global, next(batches)))
      return call

    self.measure(result, 'input_pipeline', batch_size, input_call)
    if 'compile_s' in result['input_pipeline']:
      # Nothing is compiled here: the first call is just the first batch.
      result['input_pipeline']['first_call_s'] = (
          result['input_pipeline'].pop('compile_s'))

  def _time_tails(self, result, batch_size, images_f32):
    """(e) Teacher tails: forward plus d/dh, from each insertion point."""
    feature_shapes = jax.eval_shape(self.teacher.forward,
                                    self.teacher.variables, images_f32)[1]
    for k in self.settings.points:

      def tail_call(k=k):
        shape = feature_shapes[f'stage{k}'].shape
        h = self.to_global(self.rng.standard_normal(
            (shape[0] // self.process_count, *shape[1:])).astype(np.float32))

        def call():
          jax.block_until_ready(self.teacher.tails[k](self.teacher.variables,
                                                      h))
        return call

      self.measure(result, f'tail@{k}', batch_size, tail_call)
