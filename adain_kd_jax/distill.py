"""Method name -> loss function: the one place where models and losses meet.

`Distiller.loss_fn(params, batch_stats, teacher_vars, images, labels)` returns
`(loss, (metrics, new_batch_stats))`. It differentiates the student's
variables only: the teacher's variables are an argument wrapped in
`stop_gradient`, its BatchNorm runs on running statistics (`train=False`) and
nothing of it is ever returned for update. Gradients of the AdaIN loss still
flow *through* the frozen teacher tail into the student's statistics.

Objective (METHOD.md section 4):
  L = ce * CE + fm * L_fm + adain * L_adain + kd * L_kd  (+ fitnet, stat_l2)
with each method switching on its terms (METHODS below).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax import connectors as connectors_lib
from adain_kd_jax import losses
from adain_kd_jax import models

# The loss terms each method adds up (weights from config.loss).
METHODS = {
    'none': ('ce',),
    'kd': ('ce', 'kd'),
    'fitnet': ('ce', 'fitnet'),
    'stat_l2': ('ce', 'stat_l2'),
    'adain': ('ce', 'adain', 'fm'),
    'adain_kd': ('ce', 'adain', 'fm', 'kd'),
}
# Terms computed on feature points, through connectors.
_FEATURE_TERMS = ('fitnet', 'stat_l2', 'adain', 'fm')


def check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f'Unknown method {method!r} (config.method). Valid '
                     f'methods: {", ".join(METHODS)}.')


@dataclasses.dataclass(frozen=True)
class Distiller:
  """A student, an optional frozen teacher, connectors and the loss weights."""
  student: nn.Module
  teacher: nn.Module | None
  connectors: connectors_lib.Connectors | None
  terms: tuple[str, ...]  # Terms with a non-zero weight.
  weights: dict[str, float]
  points: tuple[int, ...]
  point_weights: tuple[float, ...]
  fm_point: int  # FitNet-style term of adain methods: the last stage.
  temperature: float
  adain_kind: str

  def init(self, rng, images_NHWC):
    """Returns {'params': {'student', 'connector'}, 'batch_stats': ...}."""
    s_rng, c_rng = jax.random.split(rng)
    s_vars = self.student.init(s_rng, images_NHWC, train=False)
    params = {'student': s_vars['params']}
    batch_stats = {'student': s_vars['batch_stats']}
    if self.connectors is not None:
      _, s_feats = self.student.apply(s_vars, images_NHWC, train=False)
      c_vars = self.connectors.init(c_rng, s_feats, train=False)
      params['connector'] = c_vars['params']
      batch_stats['connector'] = c_vars['batch_stats']
    return {'params': params, 'batch_stats': batch_stats}

  def predict(self, params, batch_stats, images_NHWC):
    """Student logits in inference mode (evaluation)."""
    logits, _ = self.student.apply(
        {'params': params['student'], 'batch_stats': batch_stats['student']},
        images_NHWC, train=False)
    return logits

  def loss_fn(self, params, batch_stats, teacher_vars, images_NHWC, labels_N):
    """The training objective. Returns (loss, (metrics, new_batch_stats))."""
    (z_s, f_s), s_updates = self.student.apply(
        {'params': params['student'], 'batch_stats': batch_stats['student']},
        images_NHWC, train=True, mutable=['batch_stats'])
    new_batch_stats = {'student': s_updates['batch_stats']}
    values = {'ce': losses.cross_entropy(z_s, labels_N)}

    if self.teacher is not None:
      t_vars = jax.lax.stop_gradient(teacher_vars)
      z_t, f_t = self.teacher.apply(t_vars, images_NHWC, train=False)
      z_t = jax.lax.stop_gradient(z_t)
      f_t = jax.lax.stop_gradient(f_t)
    if 'kd' in self.terms:
      values['kd'] = losses.kd(z_s, z_t, self.temperature)

    if self.connectors is not None:
      c_out, c_updates = self.connectors.apply(
          {'params': params['connector'],
           'batch_stats': batch_stats['connector']},
          f_s, train=True, mutable=['batch_stats'])
      new_batch_stats['connector'] = c_updates['batch_stats']
      for term in ('fitnet', 'stat_l2', 'adain'):
        if term in self.terms:
          values[term] = sum(
              w * self._point_loss(term, k, f_t, c_out, z_t, t_vars)
              for k, w in zip(self.points, self.point_weights))
      if 'fm' in self.terms:
        name = f'stage{self.fm_point}'
        values['fm'] = losses.fitnet(f_t[name], c_out[name])

    loss = sum(self.weights[t] * values[t] for t in self.terms)
    metrics = dict(values, loss=loss,
                   accuracy=jnp.mean(jnp.argmax(z_s, -1) == labels_N))
    return loss, (metrics, new_batch_stats)

  def _point_loss(self, term, k, f_t, c_out, z_t, t_vars):
    name = f'stage{k}'
    if term == 'fitnet':
      return losses.fitnet(f_t[name], c_out[name])
    if term == 'stat_l2':
      return losses.stat_l2(f_t[name], c_out[name])

    def tail_fn(h):
      return self.teacher.apply(t_vars, h, start=k, train=False, method='tail')

    return losses.adain_loss(f_t[name], c_out[name], z_t, tail_fn,
                             kind=self.adain_kind,
                             temperature=self.temperature)


def create(config, num_classes: int, image_shape) -> Distiller:
  """Builds the Distiller for `config` (validates method, models, points)."""
  check_method(config.method)
  dtype = jnp.dtype(config.dtype)
  student = models.create_model(config.model, num_classes, dtype=dtype)
  weights = {t: float(config.loss[t]) for t in ('ce', 'kd', 'fitnet',
                                                 'stat_l2', 'adain', 'fm')}
  terms = tuple(t for t in METHODS[config.method]
                if t == 'ce' or weights[t] != 0.0)
  teacher = None
  if config.method != 'none':
    if not config.teacher:
      raise ValueError(f'config.method={config.method!r} needs a teacher: '
                       'set config.teacher (and config.teacher_checkpoint).')
    teacher = models.create_model(config.teacher, num_classes, dtype=dtype)

  points = tuple(int(k) for k in config.points)
  point_weights = tuple(float(w) for w in config.point_weights)
  num_stages = student.num_stages
  fm_point = num_stages
  connectors = None
  feature_terms = [t for t in terms if t in _FEATURE_TERMS]
  if feature_terms:
    if teacher.num_stages != num_stages:
      raise ValueError(
          f'config.model={config.model!r} has {num_stages} stages but '
          f'config.teacher={config.teacher!r} has {teacher.num_stages}; '
          'feature methods pair stage k with stage k.')
    if not points or len(points) != len(point_weights):
      raise ValueError(
          f'config.points={points} and config.point_weights={point_weights} '
          'must be non-empty and of the same length.')
    for k in points:
      if not 1 <= k <= num_stages:
        raise ValueError(
            f'config.points has stage {k}, outside 1..{num_stages} for '
            f'{config.model!r}; use a stage number in that range.')
    needed = sorted(set(points) | ({fm_point} if 'fm' in terms else set()))
    t_feats = jax.eval_shape(
        lambda x: teacher.init_with_output(
            jax.random.key(0), x, train=False)[0][1],
        jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    connectors = connectors_lib.Connectors(
        channels=tuple((f'stage{k}', t_feats[f'stage{k}'].shape[-1])
                       for k in needed), dtype=dtype)
  return Distiller(student=student, teacher=teacher, connectors=connectors,
                   terms=terms, weights=weights, points=points,
                   point_weights=point_weights, fm_point=fm_point,
                   temperature=float(config.loss.temperature),
                   adain_kind=config.loss.adain_kind)


def teacher_variables_struct(distiller: Distiller, image_shape) -> Any:
  """The shapes and dtypes the teacher's variables must have."""
  return jax.eval_shape(
      lambda x: distiller.teacher.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
