"""The terms of the relational baselines SP, CC, RKD, PKT, and of NST,
KDSVD and DIST.

Each as RepDistiller's `train_student.py` and `helper/loops.py` apply it
(which features, which modules trained with the student; DIST as its
authors' code); the math is in `losses/relational.py`, `nst.py`, `kdsvd.py`, `dist.py`,
the published CIFAR-100 weights in
`configs/default.py` and docs/method.md, section "Baselines".
"""

import dataclasses

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.methods import cc_heads


def last_stage(feats: dict) -> str:
  """The name of a network's last stage output ('stage<S>')."""
  return max((k for k in feats if k.startswith('stage')),
             key=lambda k: int(k[len('stage'):]))


@dataclasses.dataclass(frozen=True)
class SP(base.Term):
  """Similarity-preserving KD at each network's last stage output
  (RepDistiller's `feat[-2]`), before pooling."""

  @property
  def needs(self):
    return base.Needs(teacher=True)

  def __call__(self, out):
    return losses.sp_loss(out.feats_s[last_stage(out.feats_s)],
                          out.feats_t[last_stage(out.feats_t)])


@dataclasses.dataclass(frozen=True)
class CC(base.Term):
  """Correlation congruence on the pooled features through CC's linear
  heads (`cc_heads.CCHeads`, RepDistiller's `LinearEmbed` x 2)."""
  config_fields = ('cc',)
  dim: int = 128

  @property
  def needs(self):
    return base.Needs(teacher=True,
                      adapters=(cc_heads.CCAdapter(dim=self.dim),))

  @classmethod
  def from_config(cls, config, context):
    del context
    dim = int(config.cc.dim)
    if dim < 1:
      raise ValueError(f'config.cc.dim={dim} must be >= 1 (published: 128).')
    return cls(dim=dim)

  def __call__(self, out):
    return losses.cc_loss(*out.adapted['cc'])


@dataclasses.dataclass(frozen=True)
class RKD(base.Term):
  """Relational KD (distance + angle) on the pooled features
  (RepDistiller's `feat[-1]`)."""
  config_fields = ('rkd',)
  distance_weight: float = losses.RKD_DISTANCE_WEIGHT
  angle_weight: float = losses.RKD_ANGLE_WEIGHT

  @property
  def needs(self):
    return base.Needs(teacher=True)

  @classmethod
  def from_config(cls, config, context):
    del context
    w_d, w_a = (float(config.rkd.distance_weight),
                float(config.rkd.angle_weight))
    if w_d < 0 or w_a < 0:
      raise ValueError(
          f'config.rkd.distance_weight={w_d} and config.rkd.angle_weight='
          f'{w_a} must be >= 0 (published: 25 and 50).')
    return cls(distance_weight=w_d, angle_weight=w_a)

  def __call__(self, out):
    return losses.rkd_loss(out.feats_s['pre_logits'],
                           out.feats_t['pre_logits'],
                           self.distance_weight, self.angle_weight)


@dataclasses.dataclass(frozen=True)
class PKT(base.Term):
  """Probabilistic knowledge transfer on the pooled features
  (RepDistiller's `feat[-1]`)."""

  @property
  def needs(self):
    return base.Needs(teacher=True)

  def __call__(self, out):
    return losses.pkt_loss(out.feats_s['pre_logits'],
                           out.feats_t['pre_logits'])


@dataclasses.dataclass(frozen=True)
class NST(base.EveryStageTerm):
  """Neuron selectivity transfer, as RepDistiller: every stage output
  (its `feat[1:-1]`, as AT), summed with weight 1 each."""

  def stage_loss(self, f_s, f_t):
    return losses.nst_loss(f_s, f_t)


@dataclasses.dataclass(frozen=True)
class KDSVD(base.EveryStageTerm):
  """KDSVD, as RepDistiller: the relations of consecutive stage outputs'
  singular vectors (its `feat[1:-1]`), one loss over all stages. Needs the
  same channel count at every stage of both networks (checked by
  `objective.create`)."""

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True, same_channels=True)

  def __call__(self, out):
    names = [f'stage{k}' for k in range(1, self.num_stages + 1)]
    return losses.kdsvd_loss([out.feats_s[n] for n in names],
                             [out.feats_t[n] for n in names])


@dataclasses.dataclass(frozen=True)
class DIST(base.Term):
  """DIST: inter- and intra-class relations of the predictions at
  temperature tau (the authors' `DIST`, `config.dist`)."""
  config_fields = ('dist',)
  beta: float = 1.0
  gamma: float = 1.0
  temperature: float = 1.0

  @property
  def needs(self):
    return base.Needs(teacher=True)

  @classmethod
  def from_config(cls, config, context):
    del context
    beta, gamma = float(config.dist.beta), float(config.dist.gamma)
    temperature = float(config.dist.temperature)
    if beta < 0 or gamma < 0 or temperature <= 0:
      raise ValueError(
          f'config.dist.beta={beta}, config.dist.gamma={gamma} and '
          f'config.dist.temperature={temperature}: the weights must be >= 0 '
          'and the temperature > 0 (published: 1, 1, 4).')
    return cls(beta=beta, gamma=gamma, temperature=temperature)

  def __call__(self, out):
    return losses.dist_loss(out.logits_s_NK, out.logits_t_NK, self.beta,
                            self.gamma, self.temperature)
