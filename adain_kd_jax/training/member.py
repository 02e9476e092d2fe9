"""A run as the training loop trains it (`loop.train`): where it stands,
its clock and its metric writer."""

import time
from typing import Any

from adain_kd_jax.training import metric_writer
from adain_kd_jax.training import run as run_lib
from adain_kd_jax.training import run_progress

class Clock:
  """Wall and training time of this segment, and of all segments so far.

  Training time counts from the end of the first call (compilation
  excluded) and leaves evaluation out.
  """

  def __init__(self, start_time: float,
               progress: run_progress.RunProgress):
    self.start_time = start_time
    self.earlier = progress  # The segments before this one.
    self.images = 0
    self.train_start = None
    self.eval_seconds = 0.0

  def train_seconds(self) -> float:
    if self.train_start is None:
      return 0.0
    return time.time() - self.train_start - self.eval_seconds

  def images_per_sec(self) -> float | None:
    if not self.images:
      return None
    return self.images / max(self.train_seconds(), 1e-9)

  def totals(self) -> dict[str, float]:
    """Wall time, training time (compilation and evaluation excluded) and
    training images over this run's segments so far (see summary.json)."""
    e = self.earlier
    return {'wall_seconds_total':
                e.wall_seconds_total + time.time() - self.start_time,
            'train_seconds_total':
                e.train_seconds_total + self.train_seconds(),
            'train_images_total': e.train_images_total + self.images}


class Member:
  """One run as the loop trains it: its run, where it stands (state,
  progress record: best accuracy, earlier segments' totals), its clock and
  metric writer, and the non-finite message once it has failed."""

  def __init__(self, run: run_lib.Run, start_time: float):
    self.run = run
    self.state = run.state
    self.progress = run.progress
    self.clock = Clock(start_time, self.progress)
    self.writer: metric_writer.MetricWriter | None = None
    self.failed: str | None = None
    self.last_eval: dict[str, dict[str, Any]] | None = None  # By split.

  @property
  def name(self) -> str:
    return f'{self.run.config.method}/seed{self.run.config.seed}'
