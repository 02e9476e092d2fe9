"""The terms of OFD, ReviewKD, SRRL, FT and SimKD: feature distillation
through modules trained with the student, on architecture-specific features (the
maps before the final ReLU), through the teacher's own classifier or
through a paraphraser of the teacher's map.

OFD and ReviewKD as mdistiller's distillers apply them, SRRL and SimKD as
DefangChen/SimKD's, FT as RepDistiller's (which features, which modules
trained with the student; SimKD's model predicts through the teacher's
classifier); the math is in `losses/ofd.py`, `losses/reviewkd.py`,
`losses/srrl.py`, `losses/ft.py` and `losses/simkd.py`, the published
CIFAR-100 weights in `configs/default.py`,
`configs/cifar100_distill.py` and docs/method.md, section "Baselines".
"""

import dataclasses

import jax
import jax.numpy as jnp

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.methods import ft_modules
from adain_kd_jax.methods import ofd_connectors
from adain_kd_jax.methods import reviewkd_abf
from adain_kd_jax.methods import simkd_projector
from adain_kd_jax.methods import srrl_connector
from adain_kd_jax.methods.relational_terms import last_stage


@dataclasses.dataclass(frozen=True)
class OFD(base.Term):
  """Overhaul of feature distillation (mdistiller's `OFD`): the student's
  pre-ReLU maps of the aligned stages through its connectors, against the
  teacher's pre-ReLU maps with the margins of the teacher's BatchNorms
  before those ReLUs (`ofd_connectors.OFDAdapter`, `losses.ofd_loss`)."""

  @property
  def needs(self):
    return base.Needs(teacher=True, adapters=(ofd_connectors.OFDAdapter(),))

  def __call__(self, out):
    pairs = ofd_connectors.aligned_stages(out.feats_s, out.feats_t)
    connected = out.adapted['ofd']
    margins = [jax.lax.stop_gradient(losses.ofd_margin(
        *out.teacher_method('preact_bn', k_t))) for _, k_t in pairs]
    return losses.ofd_loss(
        [connected[f'preact_stage{k_s}'] for k_s, _ in pairs],
        [out.feats_t[f'preact_stage{k_t}'] for _, k_t in pairs], margins)


@dataclasses.dataclass(frozen=True)
class ReviewKD(base.Term):
  """Knowledge review (mdistiller's `ReviewKD`): the student's levels fused
  by `reviewkd_abf.ReviewKDFusion` against the teacher's pre-ReLU maps and
  pooled vector, the hierarchical context loss with DKD's linear warm-up
  `min(epoch / warmup_epochs, 1)` (epochs from 1, as mdistiller)."""
  config_fields = ('reviewkd',)
  warmup_epochs: float = 20.0
  steps_per_epoch: int = 1

  @property
  def needs(self):
    return base.Needs(teacher=True,
                      adapters=(reviewkd_abf.ReviewKDAdapter(),))

  @classmethod
  def from_config(cls, config, context):
    warmup = float(config.reviewkd.warmup_epochs)
    if not warmup > 0:
      raise ValueError(f'config.reviewkd.warmup_epochs={warmup} must be > 0 '
                       '(published: 20).')
    return cls(warmup_epochs=warmup, steps_per_epoch=context.steps_per_epoch)

  def __call__(self, out):
    _, t_names = reviewkd_abf.levels(out.feats_s, out.feats_t)
    epoch = (jnp.asarray(out.step) // self.steps_per_epoch + 1).astype(
        jnp.float32)
    return losses.dkd_warmup_factor(epoch, self.warmup_epochs) * (
        losses.hcl_loss(list(out.adapted['reviewkd']),
                        [reviewkd_abf.as_map(out.feats_t[name])
                         for name in t_names]))


@dataclasses.dataclass(frozen=True)
class SRRL(base.Term):
  """Softmax regression representation learning (SimKD's `SRRL`): the
  student's pooled feature through its connector (`srrl_connector`), matched
  to the teacher's pooled feature and, through the frozen teacher's own
  classifier (`classify`), to the teacher's logits (`losses.srrl_loss`)."""

  @property
  def needs(self):
    return base.Needs(teacher=True,
                      adapters=(srrl_connector.SRRLAdapter(),))

  def __call__(self, out):
    return losses.srrl_loss(
        out.adapted['srrl'], out.feats_t['pre_logits'], out.logits_t_NK,
        lambda e_s: out.teacher_method('classify', e_s))


@dataclasses.dataclass(frozen=True)
class FT(base.Term):
  """Factor transfer (RepDistiller's `FactorTransfer` with its
  `Paraphraser` and `Translator`, `ft_modules`): the student's last stage
  map through the translator against the teacher's through the
  paraphraser's encoder (`losses.ft_loss`).

  Its first phase trains the paraphraser alone (`init_trains`) on the
  reconstruction of the teacher's last stage map (`init_loss`,
  `losses.ft_reconstruction_loss`). In the main phase RepDistiller keeps
  the paraphraser out of its optimiser (`trainable_list` holds the student
  and the translator); here the main loss stops the gradient of the
  teacher's factor, so the paraphraser gets none from it.
  """
  config_fields = ('init_epochs',)  # The first phase's length.
  init_trains = ('ft_paraphraser',)

  @property
  def needs(self):
    return base.Needs(teacher=True,
                      adapters=(ft_modules.ParaphraserAdapter(),
                                ft_modules.TranslatorAdapter()))

  def __call__(self, out):
    factor_t, _ = out.adapted['ft_paraphraser']
    return losses.ft_loss(out.adapted['ft'],
                          jax.lax.stop_gradient(factor_t))

  def init_loss(self, out):
    _, rec = out.adapted['ft_paraphraser']
    return losses.ft_reconstruction_loss(rec,
                                         out.feats_t[last_stage(out.feats_t)])


@dataclasses.dataclass(frozen=True)
class SimKD(base.Term):
  """Knowledge distillation with the reused teacher classifier
  (DefangChen/SimKD's `simkd`): the student's last map through its projector
  (`simkd_projector`), matched to the teacher's last map
  (`losses.simkd_loss`); the model predicts with the frozen teacher's
  classifier on the pooled projection (`losses.simkd_logits`)."""
  config_fields = ('simkd',)
  factor: int = 2
  predicted_by = ("the student's last map through the SimKD projector and "
                  "the frozen teacher's classifier")

  @property
  def needs(self):
    return base.Needs(
        teacher=True, predicts=True,
        adapters=(simkd_projector.SimKDAdapter(factor=self.factor),))

  @classmethod
  def from_config(cls, config, context):
    del context
    factor = config.simkd.factor
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
      raise ValueError(f'config.simkd.factor={factor!r} must be an int >= 1 '
                       '(published: 2).')
    return cls(factor=factor)

  def __call__(self, out):
    return losses.simkd_loss(
        out.adapted['simkd'],
        out.feats_t[simkd_projector.last_stage(out.feats_t)])

  def predict(self, out):
    return losses.simkd_logits(
        out.adapted['simkd'], lambda v: out.teacher_method('classify', v))
