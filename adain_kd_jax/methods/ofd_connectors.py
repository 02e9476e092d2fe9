"""OFD's connectors, trained with the student (params under params['ofd']).

One per distilled stage, as mdistiller's `ConnectorConvBN` (kernel size 1,
`distillers/OFD.py`): a 1x1 convolution without bias from the student's
channels to the teacher's, normal(0, sqrt(2 / (k k C_t))) init, then
BatchNorm (weight 1, bias 0), on the student's map before its final ReLU.
That is `connectors.Connector` without its ReLU, so the module is
`connectors.Connectors` on the 'preact_stage<k>' features.

The stages are mdistiller's `_align_list`: the last n = min(S_student,
S_teacher) stages of each network, the student's i-th with the teacher's
i-th. The `OFD` term declares them with `OFDAdapter`; their output is
`Outputs.adapted['ofd']['preact_stage<k>']` (k the student's stage).
"""

import dataclasses

from adain_kd_jax import models
from adain_kd_jax.methods import base
from adain_kd_jax.methods import connectors


def preact_stages(feats: dict) -> list[int]:
  """The stages k with a 'preact_stage<k>' feature, in order."""
  return sorted(int(k[len('preact_stage'):]) for k in feats
                if k.startswith('preact_stage'))


def aligned_stages(feats_s: dict, feats_t: dict) -> list[tuple[int, int]]:
  """(student stage, teacher stage) pairs: the last n of each, n the
  smaller stage count (mdistiller's `_align_list`)."""
  s, t = preact_stages(feats_s), preact_stages(feats_t)
  n = min(len(s), len(t))
  return list(zip(s[len(s) - n:], t[len(t) - n:]))


@dataclasses.dataclass(frozen=True)
class OFDAdapter(base.Adapter):
  """OFD's connectors at the aligned stages, to the teacher's channels.

  `build` raises ValueError in one line for a network without pre-ReLU
  features, a teacher that names no BatchNorm before them (the ShuffleNets,
  as in mdistiller), or a teacher map smaller than its student map
  (mdistiller pools the teacher's map to the student's size).
  """
  key = 'ofd'
  init_stream = 7

  def build(self, config, shapes):
    for role, field, feats in (('student', 'model', shapes.student),
                               ('teacher', 'teacher', shapes.teacher)):
      if not preact_stages(feats):
        raise ValueError(
            f'OFD needs the {role}\'s maps before their final ReLU, which '
            f'config.{field}={getattr(config, field)!r} does not expose '
            "(mdistiller's MobileNetV2 has none either); use "
            'another pair or method.')
    missing = models.create_model(config.teacher, 1).preact_bn_missing
    if missing:
      raise ValueError(
          f'OFD takes its margins from the teacher\'s BatchNorms before its '
          f'ReLUs; config.teacher={config.teacher!r}: {missing}. Use another '
          'teacher or method.')
    channels = []
    for k_s, k_t in aligned_stages(shapes.student, shapes.teacher):
      _, s_h, s_w, _ = shapes.student[f'preact_stage{k_s}'].shape
      _, t_h, t_w, t_c = shapes.teacher[f'preact_stage{k_t}'].shape
      if t_h < s_h or t_w < s_w:
        raise ValueError(
            f'OFD pairs student stage {k_s} ({s_h}x{s_w}) with teacher '
            f'stage {k_t} ({t_h}x{t_w}): the teacher map must be at least '
            'the student\'s size to be pooled to it; use another pair.')
      channels.append((f'preact_stage{k_s}', int(t_c)))
    return connectors.Connectors(channels=tuple(channels), dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    return ({f'preact_stage{k_s}': feats_s[f'preact_stage{k_s}']
             for k_s, _ in aligned_stages(feats_s, feats_t)},)
