"""What a loss term is: the step's outputs in, a scalar out.

A term is a frozen dataclass: its fields are its settings (read from the
config by `from_config`), `needs` says what the step must compute for it, and
calling it on the step's `Outputs` returns its value. A term with state of
its own that is not optimised (CRD's memory bank) sets `stateful`, defines
`init_state` and returns `(value, new_state)` from `__call__(out, state)`.
Terms are pure: they read `Outputs` and their settings, nothing else. A
term distilled in a first training phase (AB, FT, FSP) names what that
phase trains in `init_trains` and defines its loss, `init_loss`.

Modules trained with the student (e.g. connectors, FitNet's hint
regressors, CRD's embedding heads) are declared, not hand-wired: a
term's `needs.adapters` lists `Adapter` declarations, each naming its
module (`key`: its entry in params / batch_stats and in `Outputs.adapted`),
the student stages it maps and how it is built from the feature shapes; the
objective builds, initialises and applies every declared adapter in one
loop.
"""

import dataclasses
from typing import Any, Callable, ClassVar

import jax


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What an adapter is built from: the networks' feature shapes.

  Attributes:
    student: the student's feature shapes for one image ('stage<k>',
      'pre_logits', ...: `jax.ShapeDtypeStruct`s).
    teacher: the teacher's, or None without a teacher.
    dtype: the computation dtype (config.dtype).
  """
  student: dict[str, Any]
  teacher: dict[str, Any] | None
  dtype: Any


@dataclasses.dataclass(frozen=True)
class Adapter:
  """A declaration of a module trained with the student, in `Needs`.

  Subclasses set `key` (the module's entry in params / batch_stats and in
  `Outputs.adapted`) and `init_stream` (which key initialises it, see
  `objective.Distiller.init`), and define `build`; the fields are the
  module's settings. Declarations of one `key` (several terms through one
  set of connectors) make one module: `merge` joins them, by default the
  union of the stages, the other fields equal. The module's output is
  `Outputs.adapted[key]`.

  Attributes:
    stages: the student stages it maps, 1..S.
  """
  key: ClassVar[str]
  init_stream: ClassVar[int]
  # The module has BatchNorm: it takes `train=`, its running statistics are
  # batch_stats[key] (updated in training).
  batch_norm: ClassVar[bool] = True
  stages: tuple[int, ...] = ()

  def __post_init__(self):
    # Sorted and without repeats: the same stages, the same declaration.
    object.__setattr__(self, 'stages', tuple(sorted(set(self.stages))))

  def merge(self, other: 'Adapter') -> 'Adapter':
    """One declaration for both; ValueError when their settings differ."""
    if dataclasses.replace(other, stages=self.stages) != self:
      raise ValueError(
          f'Two terms declare the adapter {self.key!r} with different '
          f'settings: {self} and {other}.')
    return dataclasses.replace(self, stages=self.stages + other.stages)

  def build(self, config, shapes: Shapes) -> Any:
    """The Flax module (checked against `shapes`; ValueError if unfit)."""
    raise NotImplementedError

  def inputs(self, feats_s: dict[str, Any],
             feats_t: dict[str, Any] | None) -> tuple[Any, ...]:
    """The module's positional arguments: by default the student's
    features at `stages`, as one dict."""
    del feats_t
    return ({f'stage{k}': feats_s[f'stage{k}'] for k in self.stages},)


@dataclasses.dataclass(frozen=True)
class Needs:
  """What the step computes for a term, beyond the student's outputs.

  Attributes:
    teacher: the frozen teacher's logits, features and tail.
    same_stages: student and teacher must have the same number of stages
      (the term pairs stage k with stage k).
    same_channels: and the same channel count at every stage (KDSVD's
      cosines pair the two networks' channels).
    adapters: the modules trained with the student that the term reads
      (`Adapter` declarations); their outputs are `Outputs.adapted[key]`.
    predicts: the method's model is not the student alone: the term's
      `predict(out)` gives the logits that training's accuracy and every
      evaluation report (SimKD: the student's features through its
      projector and the frozen teacher's classifier), and its
      `predicted_by` names that model. At most one term of a method.
  """
  teacher: bool = False
  same_stages: bool = False
  same_channels: bool = False
  adapters: tuple[Adapter, ...] = ()
  predicts: bool = False


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
  after stage k on a map `h` (gradients flow through it into `h`);
  `teacher_method(name, *args)` applies the frozen teacher's method `name`
  (e.g. 'preact_bn', OFD's margin); `adapted` holds the outputs of the
  trained modules the terms declared.
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
  teacher_method: Callable[..., Any] | None = None
  # The declared adapters' outputs by key (`Adapter`), e.g. 'connector' ->
  # {'stage<k>': (N, H, W, C_t)}, 'crd' -> (e_s_ND, e_t_ND).
  adapted: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Term:
  """Base of every loss term (see the module docstring)."""
  stateful: ClassVar[bool] = False
  # Reads config.points / config.point_weights (`feature_points`).
  reads_points: ClassVar[bool] = False
  # The top-level config fields it (or an adapter it needs) reads besides
  # its weight config.loss.<name>: its settings group ('dkd' for
  # config.dkd), config.points. The grid, the default config and the docs
  # take the list of per-method settings from here.
  config_fields: ClassVar[tuple[str, ...]] = ()
  # The top-level keys of the trained params ('student' or an adapter's
  # key) that the run's first phase trains on `init_loss` before the
  # distillation (RepDistiller's `init()`: AB, FT, FSP), for
  # config.init_epochs epochs (training/init_phase.py); empty: no first
  # phase.
  init_trains: ClassVar[tuple[str, ...]] = ()

  @property
  def needs(self) -> Needs:
    return Needs()

  def init_loss(self, out: Outputs) -> jax.Array:
    """The first phase's loss, unweighted (terms with `init_trains`)."""
    raise NotImplementedError

  def check_shapes(self, config, shapes: Shapes) -> None:
    """Raises ValueError, one line naming the config fields, for networks
    whose features the term cannot pair (called by `objective.create` where
    a term defines it); by default every pair is fine."""
    del config, shapes

  @classmethod
  def from_config(cls, config, context: Context) -> 'Term':
    del config, context
    return cls()

  def init_state(self, rng, num_train: int, train_labels) -> Any:
    """The term's own state (stateful terms only)."""
    raise NotImplementedError

  # What predicts, in words, for a term whose `needs.predicts` is set (the
  # run's summary says so).
  predicted_by: ClassVar[str] = ''

  def predict(self, out: Outputs) -> jax.Array:
    """The model's logits_NK from the step's outputs (terms whose
    `needs.predicts` is set; in evaluation `out` is computed in inference
    mode)."""
    raise NotImplementedError

  def __call__(self, out: Outputs, *state):
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PointTerm(Term):
  """A term at feature points: `config.points` with their weights."""
  reads_points = True
  config_fields = ('points', 'point_weights')
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


@dataclasses.dataclass(frozen=True)
class EveryStageTerm(Term):
  """A term summed over every stage output, student stage k against
  teacher stage k (AT, NST): the pair must have the same stage count."""
  num_stages: int

  @property
  def needs(self):
    return Needs(teacher=True, same_stages=True)

  @classmethod
  def from_config(cls, config, context):
    del config
    return cls(num_stages=context.num_stages)

  def stage_loss(self, f_s: jax.Array, f_t: jax.Array) -> jax.Array:
    """The loss at one stage, student's map and teacher's."""
    raise NotImplementedError

  def __call__(self, out: Outputs):
    return sum(self.stage_loss(out.feats_s[f'stage{k}'],
                               out.feats_t[f'stage{k}'])
               for k in range(1, self.num_stages + 1))


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
