"""The terms of the baselines: CE, KD, logit MSE, FitNet, AT, DKD, CRD, VID.

Published recipes: docs/method.md, section "Baselines". The math is in
`losses/` (`adain_family.py`, `baselines.py`, `crd.py`, `vid.py`); this
module binds it to a step's outputs and the config.
"""

import dataclasses

import jax
import jax.numpy as jnp

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.methods import connectors
from adain_kd_jax.methods import crd_heads
from adain_kd_jax.methods import vid_regressor

_TEACHER = base.Needs(teacher=True)


@dataclasses.dataclass(frozen=True)
class CrossEntropy(base.Term):
  """Cross-entropy of the student's logits against the labels."""

  def __call__(self, out):
    return losses.cross_entropy(out.logits_s_NK, out.labels_N)


@dataclasses.dataclass(frozen=True)
class KD(base.Term):
  """Hinton KD: tau^2 KL(teacher || student) at temperature tau."""
  temperature: float = 4.0

  @property
  def needs(self):
    return _TEACHER

  @classmethod
  def from_config(cls, config, context):
    del context
    return cls(temperature=float(config.loss.temperature))

  def __call__(self, out):
    return losses.kd(out.logits_s_NK, out.logits_t_NK, self.temperature)


@dataclasses.dataclass(frozen=True)
class LogitMSE(base.Term):
  """Squared error between student and teacher logits (Ba & Caruana, 2014):
  mean over examples and classes."""

  @property
  def needs(self):
    return _TEACHER

  def __call__(self, out):
    z_t = jax.lax.stop_gradient(losses.as_float(out.logits_t_NK))
    return jnp.mean(jnp.square(losses.as_float(out.logits_s_NK) - z_t))


@dataclasses.dataclass(frozen=True)
class FitNet(base.PointTerm):
  """FitNet as the CRD benchmark: hint regressor (ConvReg) to the teacher's
  shape, then a plain squared error, summed over `points`."""

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True, adapters=(
        connectors.HintAdapter(stages=self.points),))

  def __call__(self, out):
    return self.weighted_sum(lambda k: losses.hint_mse(
        out.feats_t[f'stage{k}'], out.adapted['hint'][f'stage{k}']))


@dataclasses.dataclass(frozen=True)
class AT(base.EveryStageTerm):
  """Attention transfer, as the CRD benchmark: every stage output, summed."""

  def stage_loss(self, f_s, f_t):
    return losses.at(f_t, f_s)


@dataclasses.dataclass(frozen=True)
class DKD(base.Term):
  """Decoupled KD (alpha TCKD + beta NCKD), with its linear warm-up."""
  config_fields = ('dkd',)
  alpha: float
  beta: float
  temperature: float
  warmup_epochs: float
  steps_per_epoch: int

  @property
  def needs(self):
    return _TEACHER

  @classmethod
  def from_config(cls, config, context):
    return cls(alpha=float(config.dkd.alpha), beta=float(config.dkd.beta),
               temperature=float(config.loss.temperature),
               warmup_epochs=float(config.dkd.warmup_epochs),
               steps_per_epoch=context.steps_per_epoch)

  def __call__(self, out):
    epoch = (jnp.asarray(out.step) // self.steps_per_epoch + 1).astype(
        jnp.float32)
    return losses.dkd_warmup_factor(
        epoch, self.warmup_epochs) * losses.dkd(
            out.logits_s_NK, out.logits_t_NK, out.labels_N, alpha=self.alpha,
            beta=self.beta, temperature=self.temperature)


@dataclasses.dataclass(frozen=True)
class CRD(base.Term):
  """Contrastive representation distillation: embedding heads, a memory
  bank of every training example (the term's state) and sampled negatives.

  Published (Tian et al.), `config.crd`'s defaults: temperature 0.07, 16384
  negatives, momentum 0.5, negatives drawn from other classes (RepDistiller's
  'exact' mode), 128-d embeddings.
  """
  config_fields = ('crd',)
  stateful = True
  dim: int = 128
  temperature: float = 0.07
  num_negatives: int = 16384
  momentum: float = 0.5
  class_aware: bool = True  # Negatives from other classes ('exact').

  @property
  def needs(self):
    return base.Needs(teacher=True, adapters=(
        crd_heads.CRDAdapter(dim=self.dim),))

  @classmethod
  def from_config(cls, config, context):
    del context
    return cls(dim=int(config.crd.dim),
               temperature=float(config.crd.temperature),
               num_negatives=int(config.crd.num_negatives),
               momentum=float(config.crd.momentum),
               class_aware=bool(config.crd.class_aware))

  def init_state(self, rng, num_train, train_labels):
    if num_train <= self.num_negatives:
      raise ValueError(
          f'config.crd.num_negatives={self.num_negatives} needs more '
          f'training examples than the {num_train} here; lower it.')
    state = losses.crd_memory_init(rng, num_train, self.dim)
    if self.class_aware:
      if train_labels is None:
        raise ValueError(
            'config.crd.class_aware=True needs every training label up '
            'front, which streamed data sets do not read; set '
            '--config.crd.class_aware=False.')
      state['labels'] = jnp.asarray(train_labels, jnp.int32)
    return state

  def __call__(self, out, state):
    e_s, e_t = out.adapted['crd']
    contrast = losses.crd_sample_contrast(
        out.rng, out.index_N, out.labels_N, len(state['memory_s']),
        self.num_negatives, data_labels_M=state.get('labels'))
    memory = {k: v for k, v in state.items() if k != 'labels'}
    value, new_memory = losses.crd_loss(
        e_s, e_t, out.index_N, contrast, memory,
        temperature=self.temperature, momentum=self.momentum)
    return value, dict(state, **new_memory)


@dataclasses.dataclass(frozen=True)
class VID(base.Term):
  """Variational information distillation, as RepDistiller: a regressor per
  stage output (`vid_regressor.VIDRegressor`) and the Gaussian negative
  log-likelihood of the teacher's map, summed over every stage with weight
  1 each (RepDistiller's `feat[1:-1]`, as AT)."""
  config_fields = ('vid',)
  num_stages: int
  init_pred_var: float = losses.VID_INIT_PRED_VAR
  eps: float = losses.VID_EPS

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True, adapters=(
        vid_regressor.VIDAdapter(
            stages=tuple(range(1, self.num_stages + 1)),
            init_pred_var=self.init_pred_var, eps=self.eps),))

  @classmethod
  def from_config(cls, config, context):
    init_pred_var, eps = float(config.vid.init_pred_var), float(config.vid.eps)
    if not init_pred_var > eps > 0:
      raise ValueError(
          f'config.vid.init_pred_var={init_pred_var} and config.vid.eps='
          f'{eps} must satisfy init_pred_var > eps > 0 (published: 5.0 and '
          '1e-5).')
    return cls(num_stages=context.num_stages, init_pred_var=init_pred_var,
               eps=eps)

  def __call__(self, out):
    return sum(losses.vid_loss(out.feats_t[f'stage{k}'],
                               *out.adapted['vid'][f'stage{k}'],
                               eps=self.eps)
               for k in range(1, self.num_stages + 1))
