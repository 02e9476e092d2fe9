"""What a run carries from one segment to the next: the record its
checkpoints keep beside the state (their JSON meta).

A segment is one start of the command. The record holds the best
evaluation so far, how often the run was resumed and under which allowed
config changes, and the wall time, training time and training images of
all segments before this one. Imports no JAX.
"""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunProgress:
  """The checkpoints' meta of a run, as a record."""
  best_accuracy: float = -1.0  # The best evaluation so far (-1: none yet).
  best_step: int = 0  # Its step.
  resumes: int = 0  # Segments after the first.
  # The allowed config changes ({'field', 'was', 'now', 'at_step'}).
  config_changes: tuple[dict[str, Any], ...] = ()
  # Over the segments before this one (member.Clock adds this one's).
  wall_seconds_total: float = 0.0
  train_seconds_total: float = 0.0
  train_images_total: int = 0

  @classmethod
  def from_json(cls, meta: dict[str, Any]) -> 'RunProgress':
    """From a checkpoint's meta; a key it lacks (an older run's) keeps its
    default."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in meta.items() if k in names}
    if 'config_changes' in values:
      values['config_changes'] = tuple(values['config_changes'])
    return cls(**values)

  def to_json(self) -> dict[str, Any]:
    """The checkpoint's meta: the keys of earlier versions, with `resumes`
    and `config_changes` only once they hold something."""
    out = dataclasses.asdict(self)
    out['config_changes'] = list(self.config_changes)
    if not self.resumes:
      del out['resumes']
    if not self.config_changes:
      del out['config_changes']
    return out
