"""What a loss term is: the step's outputs in, a scalar out.

A term is a frozen dataclass: its fields are its settings (read from the
config by `from_config`), `needs` says what the step must compute for it, and
calling it on the step's `Outputs` returns its value. A term with state of
its own that is not optimised (CRD's memory bank) sets `stateful`, defines
`init_state` and returns `(value, new_state)` from `__call__(out, state)`.
Terms are pure: they read `Outputs` and their settings, nothing else.
"""

import dataclasses
from typing import Any, Callable, ClassVar

import jax


@dataclasses.dataclass(frozen=True)
class Needs:
  """What the step computes for a term, beyond the student's outputs.

  Attributes:
    teacher: the frozen teacher's logits, features and tail.
    same_stages: student and teacher must have the same number of stages
      (the term pairs stage k with stage k).
    connector: student stages given a connector (1x1 conv + BN to the
      teacher's channels); `Outputs.connected['stage<k>']`.
    hint: student stages given FitNet's hint regressor (to the teacher's
      shape); `Outputs.hinted['stage<k>']`.
    embed: CRD's embedding size (0: none); `Outputs.embedded`.
  """
  teacher: bool = False
  same_stages: bool = False
  connector: tuple[int, ...] = ()
  hint: tuple[int, ...] = ()
  embed: int = 0


@dataclasses.dataclass(frozen=True)
class Context:
  """What a term's settings may depend on besides the config."""
  num_stages: int  # The student's S.
  steps_per_epoch: int = 1


@dataclasses.dataclass(frozen=True)
class Outputs:
  """One training step's outputs that terms read (inside the traced step).

  Shape suffixes: N batch, K classes. Features are dicts 'stage<k>' ->
  (N, H, W, C) and 'pre_logits' -> (N, D). Teacher-side values are already
  wrapped in `stop_gradient`; `tail(k, h)` runs the frozen teacher from
  after stage k on a map `h` (gradients flow through it into `h`).
  """
  logits_s_NK: jax.Array
  feats_s: dict[str, jax.Array]
  labels_N: jax.Array
  step: jax.Array  # The 0-based step of the state being updated.
  rng: jax.Array | None = None
  index_N: jax.Array | None = None  # Positions in the training set.
  logits_t_NK: jax.Array | None = None
  feats_t: dict[str, jax.Array] | None = None
  tail: Callable[[int, jax.Array], jax.Array] | None = None
  connected: dict[str, jax.Array] | None = None
  hinted: dict[str, jax.Array] | None = None
  embedded: tuple[jax.Array, jax.Array] | None = None  # (e_s_ND, e_t_ND)


@dataclasses.dataclass(frozen=True)
class Term:
  """Base of every loss term (see the module docstring)."""
  stateful: ClassVar[bool] = False
  # Reads config.points / config.point_weights (`feature_points`).
  reads_points: ClassVar[bool] = False

  @property
  def needs(self) -> Needs:
    return Needs()

  @classmethod
  def from_config(cls, config, context: Context) -> 'Term':
    del config, context
    return cls()

  def init_state(self, rng, num_train: int, train_labels) -> Any:
    """The term's own state (stateful terms only)."""
    raise NotImplementedError

  def __call__(self, out: Outputs, *state):
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PointTerm(Term):
  """A term at feature points: `config.points` with their weights."""
  reads_points = True
  points: tuple[int, ...]
  point_weights: tuple[float, ...]

  @classmethod
  def from_config(cls, config, context):
    points, weights = feature_points(config, context.num_stages)
    return cls(points=points, point_weights=weights, **cls.settings(config))

  @classmethod
  def settings(cls, config) -> dict[str, Any]:
    """The term's other fields, from the config."""
    del config
    return {}

  def weighted_sum(self, fn: Callable[[int], jax.Array]) -> jax.Array:
    """sum_k w_k fn(k) over the points."""
    return sum(w * fn(k) for k, w in zip(self.points, self.point_weights))


def feature_points(config, num_stages: int) -> tuple[tuple[int, ...],
                                                     tuple[float, ...]]:
  """`config.points` as stage numbers 1..S, with `config.point_weights`.

  A point <= 0 counts from the last stage S: 0 is S, -1 is S-1, so that a
  config file need not know the model's stage count.

  Raises:
    ValueError: naming the field, for empty or mismatched lists or a stage
      outside 1..S.
  """
  raw = tuple(int(k) for k in config.points)
  weights = tuple(float(w) for w in config.point_weights)
  if not raw or len(raw) != len(weights):
    raise ValueError(
        f'config.points={raw} and config.point_weights={weights} must be '
        'non-empty and of the same length.')
  points = tuple(k + num_stages if k <= 0 else k for k in raw)
  for given, k in zip(raw, points):
    if not 1 <= k <= num_stages:
      raise ValueError(
          f'config.points has stage {given}, outside 1..{num_stages} (or '
          f'{1 - num_stages}..0 counted from the last stage) for '
          f'{config.model!r}; use a stage number in that range.')
  return points, weights
