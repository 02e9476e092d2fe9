"""The AdaIN family's terms: L_adain, the feature-matching L_fm, stat_l2.

Formulas: docs/method.md ("The AdaIN loss", "The objective"); the math is in
`losses.py`, this module binds it to a step's outputs and the config.
"""

import dataclasses

from adain_kd_jax import losses
from adain_kd_jax import losses_baselines
from adain_kd_jax.methods import base


@dataclasses.dataclass(frozen=True)
class AdaIN(base.PointTerm):
  """beta * L_adain: the student's statistics in the teacher's map, judged
  by the teacher's tail, summed over `points` with `point_weights`."""
  kind: str = 'mse'  # losses.ADAIN_LOSS_KINDS
  stats: str = 'both'  # losses.ADAIN_STATS
  temperature: float = 4.0  # For kind 'kl'.

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True, connector=self.points)

  @classmethod
  def settings(cls, config):
    return dict(kind=config.loss.adain_kind, stats=config.loss.adain_stats,
                temperature=float(config.loss.temperature))

  def __call__(self, out):
    return self.weighted_sum(lambda k: losses.adain_loss(
        out.feats_t[f'stage{k}'], out.connected[f'stage{k}'],
        out.logits_t_NK, lambda h: out.tail(k, h), kind=self.kind,
        temperature=self.temperature, stats=self.stats,
        labels_N=out.labels_N))


@dataclasses.dataclass(frozen=True)
class FeatureMatching(base.Term):
  """alpha * L_fm: FitNet's squared error at the last stage, through the
  AdaIN connector (the feature term of the adain methods)."""
  point: int

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True,
                      connector=(self.point,))

  @classmethod
  def from_config(cls, config, context):
    del config
    return cls(point=context.num_stages)

  def __call__(self, out):
    name = f'stage{self.point}'
    return losses_baselines.fitnet(out.feats_t[name], out.connected[name])


@dataclasses.dataclass(frozen=True)
class StatL2(base.PointTerm):
  """The statistics-L2 ablation: the same statistics, compared directly."""

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True, connector=self.points)

  def __call__(self, out):
    return self.weighted_sum(lambda k: losses.stat_l2(
        out.feats_t[f'stage{k}'], out.connected[f'stage{k}']))
