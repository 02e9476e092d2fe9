"""What a campaign's pending runs cost: their steps and, where known, time.

`campaign --list` shows it. A run's steps come from its config alone
(`train_steps`); its time from the finished runs of the same workdir
(`speeds`): their wall time per training image (summary.json's
`wall_seconds_total` over steps x batch size, compiling and evaluations
included), the median for each (data set, teacher, student, device). A
pending run gets one estimate for each device that trained its pair; none
where no finished run did. Summaries written before they named their device
(summary.json's `device`) count for no device. A grid member's wall time is
its grid's, so runs trained as grids give a pessimistic speed for solo runs.
"""

import json
import os
import statistics
from typing import Iterable

import ml_collections

from adain_kd_jax.training import run_record

# Training examples of each data set's train split, before train_limit,
# holdout and train_per_class (the sizes the data sets publish).
TRAIN_EXAMPLES = {'mnist': 60_000, 'fashion_mnist': 60_000, 'cifar10': 50_000,
                  'cifar100': 50_000, 'imagenet2012': 1_281_167}
_NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10,
                'cifar100': 100, 'imagenet2012': 1000}

# (dataset, teacher, student model, device) -> seconds per training image.
Speeds = dict[tuple[str, str, str, str], float]


def train_steps(config: ml_collections.ConfigDict) -> int | None:
  """The run's training steps, from its config (None: its data set's size
  is unknown here and it trains for epochs)."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  n = TRAIN_EXAMPLES.get(config.dataset)
  if n is None or config.get('mock_data', 0):
    return None
  if config.train_limit:
    n = min(n, config.train_limit)
  n -= config.holdout
  if config.get('train_per_class', 0):
    n = min(n, config.train_per_class * _NUM_CLASSES[config.dataset])
  return int(round(config.num_epochs * (n // config.batch_size)))


def _pair(config) -> tuple[str, str, str]:
  teacher = config.teacher if config.get('teacher_checkpoint') else ''
  return config.dataset, teacher, config.model


def speeds(run_dirs: Iterable[str]) -> Speeds:
  """The median seconds per training image of the finished runs among
  `run_dirs` (summary.json and config.json read), per pair and device."""
  samples = {}
  for run_dir in run_dirs:
    try:
      with open(os.path.join(run_dir, 'summary.json')) as f:
        summary = json.load(f)
      config = run_record.load(os.path.join(run_dir, 'config.json'))
    except (OSError, ValueError):
      continue
    images = summary.get('steps', 0) * config.get('batch_size', 0)
    if not summary.get('device') or images <= 0:
      continue
    key = _pair(config) + (summary['device'],)
    samples.setdefault(key, []).append(summary['wall_seconds_total'] / images)
  return {key: statistics.median(v) for key, v in samples.items()}


def estimates(config: ml_collections.ConfigDict,
              known: Speeds) -> dict[str, float]:
  """{device: estimated seconds} of a run, for every device with a speed
  for its pair."""
  steps = train_steps(config)
  if steps is None:
    return {}
  pair = _pair(config)
  return {key[3]: per_image * steps * config.batch_size
          for key, per_image in known.items() if key[:3] == pair}


def duration(seconds: float) -> str:
  """'45 s', '12 min' or '3.4 h'."""
  if seconds < 90:
    return f'{seconds:.0f} s'
  if seconds < 5400:
    return f'{seconds / 60:.0f} min'
  return f'{seconds / 3600:.1f} h'


def describe(config: ml_collections.ConfigDict, known: Speeds) -> str:
  """'6 steps, ~40 s on cpu x1' (or '6 steps', '? steps') for --list."""
  steps = train_steps(config)
  text = f'{steps:,} steps' if steps is not None else '? steps'
  times = estimates(config, known)
  if times:
    text += ', ' + ', '.join(f'~{duration(s)} on {device}'
                             for device, s in sorted(times.items()))
  return text
