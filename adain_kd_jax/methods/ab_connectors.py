"""AB's connectors, trained in the first phase (params under params['ab']).

RepDistiller's `Connector` (`models/util.py`, the one its `abound` method
builds in `train_student.py`), per stage, on the student's map before its
final ReLU (`feat_s[1:-1]` with `preact=True`): nothing where the student's
map already has the teacher's channels and height, else `ConvReg` without
its ReLU (`connectors.HintRegressor(relu=False)`: the convolution that maps
the student's map to the teacher's channels and size, then BatchNorm).
Every stage of each network, stage k with stage k. The `AB` term declares
them with `ABAdapter`; their output is
`Outputs.adapted['ab']['preact_stage<k>']`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.methods import base
from adain_kd_jax.methods import connectors
from adain_kd_jax.methods import ofd_connectors


class ABConnectors(nn.Module):
  """One connector per stage: identity or ConvReg without its ReLU.

  Attributes:
    layout: ((feature_name, teacher_channels, teacher_H, teacher_W,
      identity), ...).
  """
  layout: tuple[tuple[str, int, int, int, bool], ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, Any], *, train: bool):
    return {name: features[name] if identity else connectors.HintRegressor(
        c, (h, w), dtype=self.dtype, relu=False, name=name)(
            features[name], train=train)
            for name, c, h, w, identity in self.layout}


@dataclasses.dataclass(frozen=True)
class ABAdapter(base.Adapter):
  """AB's connectors at every stage, to the teacher's pre-ReLU maps.

  `build` raises ValueError in one line for a network without pre-ReLU
  maps, or a stage whose student map no ConvReg maps to the teacher's.
  """
  key = 'ab'
  init_stream = 10

  def build(self, config, shapes):
    stages = {}
    for role, field, feats in (('student', 'model', shapes.student),
                               ('teacher', 'teacher', shapes.teacher)):
      stages[role] = ofd_connectors.preact_stages(feats)
      if not stages[role]:
        raise ValueError(
            f'AB needs the {role}\'s maps before their final ReLU, which '
            f'config.{field}={getattr(config, field)!r} does not expose; '
            'use another pair or method.')
    if stages['student'] != stages['teacher']:
      raise ValueError(
          f'AB pairs stage k with stage k: config.model={config.model!r} '
          f'has pre-ReLU maps at stages {stages["student"]}, '
          f'config.teacher={config.teacher!r} at {stages["teacher"]}; use '
          'another pair.')
    layout = []
    for k in stages['student']:
      name = f'preact_stage{k}'
      _, s_h, s_w, s_c = shapes.student[name].shape
      _, t_h, t_w, t_c = shapes.teacher[name].shape
      identity = (s_c, s_h) == (t_c, t_h)
      if not identity:
        try:
          connectors.hint_layout(name, (s_h, s_w), (t_h, t_w))
        except ValueError:
          raise ValueError(
              f'AB at stage {k}: the student map is {s_h}x{s_w}, the '
              f'teacher map {t_h}x{t_w}; its connector (RepDistiller '
              'ConvReg) maps a student map of twice, half or at least the '
              'teacher\'s height only. Use another pair.') from None
      layout.append((name, int(t_c), int(t_h), int(t_w), identity))
    return ABConnectors(layout=tuple(layout), dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    del feats_t
    return ({name: f for name, f in feats_s.items()
             if name.startswith('preact_stage')},)
