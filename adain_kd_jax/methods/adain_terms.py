"""The AdaIN family's terms: L_adain, L_fm, the mean-only L_stat_mean, stat_l2.

Formulas: docs/method.md ("The AdaIN loss", "The objective"); the math is in
`losses/adain_family.py`, this module binds it to a step's outputs and the
config.
"""

import dataclasses

import jax.numpy as jnp

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.methods import connectors


def _through_connectors(stages) -> base.Needs:
  """The teacher, and connectors at `stages` (`out.adapted['connector']`)."""
  return base.Needs(teacher=True, same_stages=True, adapters=(
      connectors.ConnectorAdapter(stages=tuple(stages)),))

# The points with their weights, and the connectors' ReLU.
_CONNECTOR_POINTS = ('points', 'point_weights', 'connector_relu')


@dataclasses.dataclass(frozen=True)
class AdaIN(base.PointTerm):
  """beta * L_adain: the student's statistics in the teacher's map, judged
  by the teacher's tail, summed over `points` with `point_weights`, times a
  linear warm-up `min(step / (warmup_epochs * steps_per_epoch), 1)` when
  `warmup_epochs` > 0 (at step 0 the term pushes the student several times
  harder than CE, mostly a batch-mean mismatch the connector's BN absorbs)."""
  config_fields = _CONNECTOR_POINTS
  kind: str = 'mse'  # losses.ADAIN_LOSS_KINDS
  stats: str = 'both'  # losses.ADAIN_STATS
  temperature: float = 4.0  # For kind 'kl' (loss.adain_temperature).
  warmup_epochs: float = 0.0  # loss.adain_warmup_epochs; 0 = none.
  steps_per_epoch: int = 1

  @property
  def needs(self):
    return _through_connectors(self.points)

  @classmethod
  def from_config(cls, config, context):
    points, weights = base.feature_points(config, context.num_stages)
    loss = config.loss
    return cls(points=points, point_weights=weights, kind=loss.adain_kind,
               stats=loss.adain_stats,
               temperature=float(loss.adain_temperature),
               warmup_epochs=float(loss.adain_warmup_epochs),
               steps_per_epoch=context.steps_per_epoch)

  def __call__(self, out):
    value = self.weighted_sum(lambda k: losses.adain_loss(
        out.feats_t[f'stage{k}'], out.adapted['connector'][f'stage{k}'],
        out.logits_t_NK, lambda h: out.tail(k, h), kind=self.kind,
        temperature=self.temperature, stats=self.stats,
        labels_N=out.labels_N))
    if self.warmup_epochs <= 0:
      return value
    steps = self.warmup_epochs * self.steps_per_epoch
    return jnp.minimum(jnp.asarray(out.step, jnp.float32) / steps,
                       1.0) * value


@dataclasses.dataclass(frozen=True)
class FeatureMatching(base.Term):
  """alpha * L_fm: FitNet's squared error at the last stage, through the
  AdaIN connector (the feature term of the adain methods)."""
  config_fields = ('connector_relu',)
  point: int

  @property
  def needs(self):
    return _through_connectors((self.point,))

  @classmethod
  def from_config(cls, config, context):
    del config
    return cls(point=context.num_stages)

  def __call__(self, out):
    name = f'stage{self.point}'
    return losses.feature_mse(out.feats_t[name],
                              out.adapted['connector'][name])


@dataclasses.dataclass(frozen=True)
class StatMean(base.PointTerm):
  """L_stat_mean: the squared error of the channel means alone, at the
  AdaIN points, through the same connectors (the authors' released form adds
  it to the squared error through the teacher's classifier)."""
  config_fields = _CONNECTOR_POINTS

  @property
  def needs(self):
    return _through_connectors(self.points)

  def __call__(self, out):
    return self.weighted_sum(lambda k: losses.stat_mean_l2(
        out.feats_t[f'stage{k}'], out.adapted['connector'][f'stage{k}']))


@dataclasses.dataclass(frozen=True)
class StatL2(base.PointTerm):
  """The statistics-L2 ablation: the same statistics, compared directly."""
  config_fields = _CONNECTOR_POINTS

  @property
  def needs(self):
    return _through_connectors(self.points)

  def __call__(self, out):
    return self.weighted_sum(lambda k: losses.stat_l2(
        out.feats_t[f'stage{k}'], out.adapted['connector'][f'stage{k}']))
