"""The terms of FSP and AB: methods distilled in a first training phase.

As RepDistiller's `train_student.py` runs them: its `init()`
(`helper/pretrain.py`) first trains, for `init_epochs`, the student's
feature modules (every module but its classifier) on the FSP loss, or those
and AB's connectors on the AB loss; the distillation that follows adds
nothing for either (`loss_kd = 0` in `helper/loops.py`), so their main
phase is cross-entropy alone with the published `-a 0` (no KD). Here the
first phase is `init_trains` and `init_loss` (training/init_phase.py runs
it); the term's value in the main phase is the same loss, weighted by
config.loss.<term> (0, as published: reported, not optimised). The math is
in `losses/two_stage.py`.
"""

import dataclasses

from adain_kd_jax import losses
from adain_kd_jax.methods import ab_connectors
from adain_kd_jax.methods import base


def fsp_maps(feats: dict, num_stages: int) -> list:
  """RepDistiller's `feat[:-1]`: the stem's output and every stage's."""
  return [feats['stem']] + [feats[f'stage{k}']
                            for k in range(1, num_stages + 1)]


@dataclasses.dataclass(frozen=True)
class FSP(base.Term):
  """Flow of solution procedure (RepDistiller's `FSP`): the FSP matrices of
  consecutive maps, student against teacher (`losses.fsp_loss`), trained
  on the student's feature modules in the first phase."""
  config_fields = ('init_epochs',)
  init_trains = ('student',)
  num_stages: int

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True)

  @classmethod
  def from_config(cls, config, context):
    del config
    return cls(num_stages=context.num_stages)

  def check_shapes(self, config, shapes):
    """The reference's check: the same channels at every map."""
    names = ['stem'] + [f'stage{k}' for k in range(1, self.num_stages + 1)]
    c_s = [int(shapes.student[n].shape[-1]) for n in names]
    c_t = [int(shapes.teacher[n].shape[-1]) for n in names]
    if c_s != c_t:
      raise ValueError(
          f'FSP pairs maps of the same channels: config.model='
          f'{config.model!r} has {c_s}, config.teacher={config.teacher!r} '
          f'has {c_t} (stem, stages); use a pair of equal widths (e.g. '
          'wrn_40_2 -> wrn_16_2) or another method.')

  def init_loss(self, out):
    return losses.fsp_loss(fsp_maps(out.feats_s, self.num_stages),
                           fsp_maps(out.feats_t, self.num_stages))

  def __call__(self, out):
    return self.init_loss(out)


@dataclasses.dataclass(frozen=True)
class AB(base.Term):
  """Activation boundaries (RepDistiller's `ABLoss`): the student's pre-ReLU
  maps through its connectors (`ab_connectors`) against the teacher's
  (`losses.ab_loss`), trained on the student's feature modules and the
  connectors in the first phase."""
  config_fields = ('init_epochs',)
  init_trains = ('student', 'ab')

  @property
  def needs(self):
    return base.Needs(teacher=True, same_stages=True,
                      adapters=(ab_connectors.ABAdapter(),))

  def init_loss(self, out):
    connected = out.adapted['ab']
    names = sorted(connected, key=lambda n: int(n[len('preact_stage'):]))
    return losses.ab_loss([connected[n] for n in names],
                          [out.feats_t[n] for n in names])

  def __call__(self, out):
    return self.init_loss(out)
