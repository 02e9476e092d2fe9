"""What benchmarks/step_throughput.py times: its settings, its train entries
(`Entry`: name, method, points, phase), the config each entry's step is built
on, and the ratios between entries. Imports no JAX itself.

Two recipes build the configs:
  default   configs/default.py with the models, the method, --points (weight
            1 each) and the dtype set: one entry per insertion point for the
            adain methods, all points at once for fitnet and stat_l2;
  cifar100  configs/cifar100_distill.py for (teacher, student, method): the
            config a run of the CIFAR-100 table trains with (the method's
            published weights, points, temperatures and first phase), one
            entry per method. A method with a first phase (FSP, AB, FT) gets
            two: `<method>/first_phase` (its steps before init_steps) and
            `<method>` (the distillation steps after it).
"""

import dataclasses
from typing import NamedTuple

from adain_kd_jax import methods as methods_lib
from adain_kd_jax.training import config_checks
from configs import cifar100_distill
from configs import default

ADAIN_METHODS = ('adain', 'adain_kd')
POINT_METHODS = ('adain', 'adain_kd', 'fitnet', 'stat_l2')
RECIPES = ('default', 'cifar100')
FIRST_PHASE = 'first_phase'


class Entry(NamedTuple):
  """One timed train step: its name in the output, its method, its points
  (None: the recipe's) and its phase ('main' or FIRST_PHASE)."""
  name: str
  method: str
  points: tuple[int, ...] | None
  phase: str = 'main'


@dataclasses.dataclass(frozen=True)
class Settings:
  """step_throughput.py's flags, checked, with the platform's defaults."""
  batch_sizes: list[int]
  methods: list[str]
  points: list[int]
  image_shape: tuple[int, ...]
  num_classes: int
  steps: int
  warmup: int
  teacher: str
  student: str
  dtype: str
  seed: int
  input_examples: int
  steps_per_call: int
  recipe: str = 'default'
  rounds: int = 1  # Passes over the train entries (--rounds).
  # Methods the recipe's config check refuses for the pair, with its line.
  refused: dict[str, str] = dataclasses.field(default_factory=dict)


def entry_names(methods, points, recipe='default'):
  """The `Entry` of each timed train step but 'none'."""
  entries = []
  for method in methods:
    if method == 'none':
      continue
    if recipe == 'cifar100':
      if methods_lib.has_first_phase(method):
        entries.append(Entry(f'{method}/{FIRST_PHASE}', method, None,
                             FIRST_PHASE))
      entries.append(Entry(method, method, None))
    elif method in ADAIN_METHODS:
      entries.extend(Entry(f'{method}@{k}', method, (k,)) for k in points)
    else:  # kd ignores the points; fitnet and stat_l2 use all of them.
      entries.append(Entry(method, method, tuple(points)))
  return entries


def over_kd(result, entries):
  """Each train entry's ms per step over kd's ({} when kd was not timed),
  with 'none' for `student_step` (method none's step)."""
  kd = result.get('kd', {}).get('ms_per_step')
  if kd is None:
    return {}
  names = {'none': 'student_step', **{e.name: e.name for e in entries}}
  return {name: result[key]['ms_per_step'] / kd
          for name, key in names.items()
          if 'ms_per_step' in result.get(key, {})}


def ratios(result, methods, points):
  """adain_over_parts and adain_over_kd for every adain-type entry of the
  default recipe (`adain@k`)."""

  def ms(name):
    entry = result.get(name)
    if entry is None or 'ms_per_step' not in entry:
      return None
    return entry['ms_per_step']

  ratios = {}
  for method in methods:
    if method not in ADAIN_METHODS:
      continue
    for k in points:
      name = f'{method}@{k}'
      if name not in result:  # The cifar100 recipe: one entry, no @k.
        continue
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


def make_config(settings: Settings, method, method_points):
  """The config of `method`'s step under the settings' recipe, with their
  models and dtype; `method_points` (default recipe) are its points. The
  teacher's variables are random, never loaded."""
  if settings.recipe == 'cifar100':
    config = cifar100_distill.get_config(
        f'teacher={settings.teacher},student={settings.student},'
        f'method={method}')
    config.update(teacher_checkpoint='unused (random teacher)',
                  dtype=settings.dtype)
  else:
    config = default.get_config()
    config.update(model=settings.student, teacher=settings.teacher,
                  teacher_checkpoint='unused (random teacher)', method=method,
                  points=tuple(method_points),
                  point_weights=(1.0,) * len(method_points),
                  dtype=settings.dtype)
  config_checks.check(config)
  return config
