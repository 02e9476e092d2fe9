"""The terms of OFD: feature distillation through trained connectors on
architecture-specific features (the maps before the final ReLU).

Each as mdistiller's distiller applies it (which features, which modules
trained with the student); the math is in `losses/ofd.py`, the published
CIFAR-100 weight in `configs/default.py` and docs/method.md, section
"Baselines".
"""

import dataclasses

import jax

from adain_kd_jax import losses
from adain_kd_jax.methods import base
from adain_kd_jax.methods import ofd_connectors


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
