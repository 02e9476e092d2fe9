"""What benchmarks/step_throughput.py times: its settings, its train entries
(name, method, points), the config each entry's step is built on, and the
ratios between entries. Imports no JAX itself.
"""

import dataclasses

from adain_kd_jax.training import config_checks
from configs import default

ADAIN_METHODS = ('adain', 'adain_kd')
POINT_METHODS = ('adain', 'adain_kd', 'fitnet', 'stat_l2')


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


def entry_names(methods, points):
  """(entry name, method, points) for each timed train step but 'none'."""
  entries = []
  for method in methods:
    if method == 'none':
      continue
    if method in ADAIN_METHODS:
      entries.extend((f'{method}@{k}', method, (k,)) for k in points)
    else:  # kd ignores the points; fitnet and stat_l2 use all of them.
      entries.append((method, method, tuple(points)))
  return entries


def ratios(result, methods, points):
  """adain_over_parts and adain_over_kd for every adain-type entry."""

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
  """configs/default.py with the settings' models and dtype and `method` at
  `method_points`; the teacher's variables are random, never loaded."""
  config = default.get_config()
  config.update(model=settings.student, teacher=settings.teacher,
                teacher_checkpoint='unused (random teacher)', method=method,
                points=tuple(method_points),
                point_weights=(1.0,) * len(method_points),
                dtype=settings.dtype)
  config_checks.check(config)
  return config
