"""Method name -> loss function: the one place where models and losses meet.

`Distiller.loss_fn(params, batch_stats, teacher_vars, batch, ...)` returns
`(loss, (metrics, new_batch_stats, new_aux))`. It differentiates the
student's variables only (and what is trained with it: connectors, FitNet's
hint regressors, CRD's embedding heads): the teacher's variables are an
argument wrapped in `stop_gradient`, its BatchNorm runs on running statistics
(`train=False`) and nothing of it is ever returned for update. Gradients of
the AdaIN loss still flow *through* the frozen teacher tail into the student's
statistics.
`aux` is method state that is not optimised (CRD's memory bank).

Objective (docs/method.md, section "The objective"):
  L = ce * CE + fm * L_fm + adain * L_adain + kd * L_kd  (+ the baselines)
with each method switching on its terms (METHODS below), weighted by
`config.loss.<term>`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax import connectors as connectors_lib
from adain_kd_jax import crd as crd_lib
from adain_kd_jax import losses
from adain_kd_jax import losses_baselines
from adain_kd_jax import models

# The loss terms each method adds up (weights from config.loss).
METHODS = {
    'none': ('ce',),
    'kd': ('ce', 'kd'),
    'fitnet': ('ce', 'fitnet'),
    'at': ('ce', 'at'),
    'stat_l2': ('ce', 'stat_l2'),
    'adain': ('ce', 'adain', 'fm'),
    'adain_kd': ('ce', 'adain', 'fm', 'kd'),
    'crd': ('ce', 'crd'),
    'dkd': ('ce', 'dkd'),
}
TERMS = ('ce', 'kd', 'fitnet', 'at', 'stat_l2', 'adain', 'fm', 'crd', 'dkd')
# Terms computed on feature points, through connectors (1x1 conv + BN).
_CONNECTOR_TERMS = ('stat_l2', 'adain', 'fm')
# Terms computed on feature points, through FitNet's hint regressors
# (RepDistiller ConvReg; params['hint']).
_HINT_TERMS = ('fitnet',)


def check_method(method: str) -> None:
  if method not in METHODS:
    raise ValueError(f'Unknown method {method!r} (config.method). Valid '
                     f'methods: {", ".join(METHODS)}.')


@dataclasses.dataclass(frozen=True)
class Distiller:
  """A student, an optional frozen teacher, trained extras and loss weights."""
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
  adain_stats: str = 'both'
  dkd_alpha: float = 1.0
  dkd_beta: float = 8.0
  dkd_warmup_epochs: float = 20.0
  crd_heads: crd_lib.CRDHeads | None = None
  crd: crd_lib.CRDSettings | None = None
  # FitNet's hint regressors (the `fitnet` method; params['hint']).
  hints: connectors_lib.HintRegressors | None = None

  def init(self, rng, images_NHWC):
    """Returns {'params': {'student', ...}, 'batch_stats': ...}."""
    s_rng, c_rng, h_rng = jax.random.split(rng, 3)
    s_vars = self.student.init(s_rng, images_NHWC, train=False)
    params = {'student': s_vars['params']}
    batch_stats = {'student': s_vars['batch_stats']}
    if (self.connectors is not None or self.crd_heads is not None
        or self.hints is not None):
      _, s_feats = self.student.apply(s_vars, images_NHWC, train=False)
    if self.connectors is not None:
      c_vars = self.connectors.init(c_rng, s_feats, train=False)
      params['connector'] = c_vars['params']
      batch_stats['connector'] = c_vars['batch_stats']
    if self.hints is not None:
      # c_rng: a method has connectors or hint regressors, never both.
      r_vars = self.hints.init(c_rng, s_feats, train=False)
      params['hint'] = r_vars['params']
      batch_stats['hint'] = r_vars['batch_stats']
    if self.crd_heads is not None:
      t_dim = self._teacher_features(images_NHWC.shape[1:])['pre_logits']
      params['crd'] = self.crd_heads.init(
          h_rng, s_feats['pre_logits'],
          jnp.zeros(t_dim.shape, jnp.float32))['params']
    return {'params': params, 'batch_stats': batch_stats}

  def init_aux(self, rng, num_data: int, train_labels_M=None):
    """Method state that is not optimised: CRD's memory bank, else {}."""
    if self.crd is None:
      return {}
    if num_data <= self.crd.num_negatives:
      raise ValueError(
          f'config.crd.num_negatives={self.crd.num_negatives} needs more '
          f'training examples than the {num_data} here; lower it.')
    aux = crd_lib.crd_memory_init(rng, num_data, self.crd_heads.dim)
    if self.crd.class_aware:
      if train_labels_M is None:
        raise ValueError(
            'config.crd.class_aware=True needs every training label up '
            'front, which streamed data sets do not read; set '
            '--config.crd.class_aware=False.')
      aux['labels'] = jnp.asarray(train_labels_M, jnp.int32)
    return aux

  def _teacher_features(self, image_shape):
    return jax.eval_shape(
        lambda x: self.teacher.init_with_output(
            jax.random.key(0), x, train=False)[0][1],
        jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))

  def predict(self, params, batch_stats, images_NHWC):
    """Student logits in inference mode (evaluation)."""
    logits, _ = self.student.apply(
        {'params': params['student'], 'batch_stats': batch_stats['student']},
        images_NHWC, train=False)
    return logits

  def loss_fn(self, params, batch_stats, teacher_vars, images_NHWC, labels_N,
              *, aux=None, index_N=None, rng=None, epoch=1.0):
    """The training objective.

    Args:
      params, batch_stats: the trained variables ({'student', ...}).
      teacher_vars: the frozen teacher's variables (None for 'none').
      images_NHWC: preprocessed float images.
      labels_N: integer labels.
      aux: method state (CRD memory); index_N: the examples' positions in the
        training set; rng: a key for CRD's negative sampling; epoch: the
        1-based epoch (DKD's warm-up).

    Returns:
      (loss, (metrics, new_batch_stats, new_aux)).
    """
    (z_s, f_s), s_updates = self.student.apply(
        {'params': params['student'], 'batch_stats': batch_stats['student']},
        images_NHWC, train=True, mutable=['batch_stats'])
    new_batch_stats = {'student': s_updates['batch_stats']}
    new_aux = aux
    values = {'ce': losses.cross_entropy(z_s, labels_N)}

    if self.teacher is not None:
      t_vars = jax.lax.stop_gradient(teacher_vars)
      z_t, f_t = self.teacher.apply(t_vars, images_NHWC, train=False)
      z_t = jax.lax.stop_gradient(z_t)
      f_t = jax.lax.stop_gradient(f_t)
    if 'kd' in self.terms:
      values['kd'] = losses.kd(z_s, z_t, self.temperature)
    if 'dkd' in self.terms:
      values['dkd'] = losses_baselines.dkd_warmup_factor(
          epoch, self.dkd_warmup_epochs) * losses_baselines.dkd(
              z_s, z_t, labels_N, alpha=self.dkd_alpha, beta=self.dkd_beta,
              temperature=self.temperature)
    if 'at' in self.terms:
      # As the CRD benchmark: every stage output, summed.
      values['at'] = sum(
          losses_baselines.at(f_t[f'stage{k}'], f_s[f'stage{k}'])
          for k in range(1, self.student.num_stages + 1))
    if 'crd' in self.terms:
      e_s, e_t = self.crd_heads.apply({'params': params['crd']},
                                      f_s['pre_logits'], f_t['pre_logits'])
      contrast = crd_lib.crd_sample_contrast(
          rng, index_N, labels_N, len(aux['memory_s']),
          self.crd.num_negatives, data_labels_M=aux.get('labels'))
      memory = {k: v for k, v in aux.items() if k != 'labels'}
      values['crd'], new_memory = crd_lib.crd_loss(
          e_s, e_t, index_N, contrast, memory,
          temperature=self.crd.temperature, momentum=self.crd.momentum)
      new_aux = dict(aux, **new_memory)
    if self.hints is not None:
      # FitNet as the CRD benchmark: ConvReg to the teacher's shape, then a
      # plain MSE (HintLoss).
      h_out, h_updates = self.hints.apply(
          {'params': params['hint'], 'batch_stats': batch_stats['hint']},
          f_s, train=True, mutable=['batch_stats'])
      new_batch_stats['hint'] = h_updates['batch_stats']
      values['fitnet'] = sum(
          w * losses_baselines.hint_mse(f_t[f'stage{k}'],
                                        h_out[f'stage{k}'])
          for k, w in zip(self.points, self.point_weights))

    if self.connectors is not None:
      c_out, c_updates = self.connectors.apply(
          {'params': params['connector'],
           'batch_stats': batch_stats['connector']},
          f_s, train=True, mutable=['batch_stats'])
      new_batch_stats['connector'] = c_updates['batch_stats']
      for term in ('stat_l2', 'adain'):
        if term in self.terms:
          values[term] = sum(
              w * self._point_loss(term, k, f_t, c_out, z_t, t_vars,
                                   labels_N)
              for k, w in zip(self.points, self.point_weights))
      if 'fm' in self.terms:
        name = f'stage{self.fm_point}'
        values['fm'] = losses_baselines.fitnet(f_t[name], c_out[name])

    loss = sum(self.weights[t] * values[t] for t in self.terms)
    metrics = dict(values, loss=loss,
                   accuracy=jnp.mean(jnp.argmax(z_s, -1) == labels_N))
    return loss, (metrics, new_batch_stats, new_aux)

  def _point_loss(self, term, k, f_t, c_out, z_t, t_vars, labels_N):
    name = f'stage{k}'
    if term == 'stat_l2':
      return losses.stat_l2(f_t[name], c_out[name])

    def tail_fn(h):
      return self.teacher.apply(t_vars, h, start=k, train=False, method='tail')

    return losses.adain_loss(f_t[name], c_out[name], z_t, tail_fn,
                             kind=self.adain_kind,
                             temperature=self.temperature,
                             stats=self.adain_stats, labels_N=labels_N)


def create(config, num_classes: int, image_shape) -> Distiller:
  """Builds the Distiller for `config` (validates method, models, points)."""
  check_method(config.method)
  dtype = jnp.dtype(config.dtype)
  student = models.create_model(config.model, num_classes, dtype=dtype)
  weights = {t: float(config.loss[t]) for t in TERMS}
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
  feature_terms = _CONNECTOR_TERMS + _HINT_TERMS
  if (('at' in terms or any(t in feature_terms for t in terms))
      and teacher.num_stages != num_stages):
    raise ValueError(
        f'config.model={config.model!r} has {num_stages} stages but '
        f'config.teacher={config.teacher!r} has {teacher.num_stages}; '
        'feature methods pair stage k with stage k.')
  fm_point = num_stages
  connectors = hints = None
  if any(t in feature_terms for t in terms):
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
    distiller = Distiller(student, teacher, None, terms, weights, points,
                          point_weights, fm_point, 4.0, 'mse')
    t_feats = distiller._teacher_features(image_shape)  # pylint: disable=protected-access
    if any(t in _CONNECTOR_TERMS for t in terms):
      connectors = connectors_lib.Connectors(
          channels=tuple((f'stage{k}', t_feats[f'stage{k}'].shape[-1])
                         for k in needed), dtype=dtype)
    if any(t in _HINT_TERMS for t in terms):
      hints = _hint_regressors(student, t_feats, points, image_shape, dtype)
  crd_heads = crd = None
  if 'crd' in terms:
    crd_heads = crd_lib.CRDHeads(dim=int(config.crd.dim))
    crd = crd_lib.CRDSettings(
        temperature=float(config.crd.temperature),
        num_negatives=int(config.crd.num_negatives),
        momentum=float(config.crd.momentum),
        class_aware=bool(config.crd.class_aware))
  return Distiller(student=student, teacher=teacher, connectors=connectors,
                   terms=terms, weights=weights, points=points,
                   point_weights=point_weights, fm_point=fm_point,
                   temperature=float(config.loss.temperature),
                   adain_kind=config.loss.adain_kind,
                   adain_stats=config.loss.adain_stats,
                   dkd_alpha=float(config.dkd.alpha),
                   dkd_beta=float(config.dkd.beta),
                   dkd_warmup_epochs=float(config.dkd.warmup_epochs),
                   crd_heads=crd_heads, crd=crd, hints=hints)


def _hint_regressors(student, t_feats, points, image_shape, dtype):
  """FitNet's hint regressors at `points`, checked against the teacher.

  Args:
    student: the student module.
    t_feats: the teacher's feature shapes (`Distiller._teacher_features`).
    points: the stage numbers.
    image_shape: (H, W, C) of an input image.
    dtype: computation dtype.

  Returns:
    The `connectors.HintRegressors` for `points`.

  Raises:
    ValueError: naming the stage, where no regressor maps the student's map
      to the teacher's shape.
  """
  s_feats = jax.eval_shape(
      lambda x: student.init_with_output(
          jax.random.key(0), x, train=False)[0][1],
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
  names = [f'stage{k}' for k in sorted(set(points))]
  shapes = []
  for name in names:  # ConvReg's cases, or an error naming the stage.
    connectors_lib.hint_layout(name, s_feats[name].shape[1:3],
                               t_feats[name].shape[1:3])
    _, t_h, t_w, t_c = t_feats[name].shape
    shapes.append((name, int(t_c), int(t_h), int(t_w)))
  hints = connectors_lib.HintRegressors(shapes=tuple(shapes), dtype=dtype)
  out = jax.eval_shape(
      lambda f: hints.init_with_output(jax.random.key(0), f,
                                       train=False)[0],
      {name: s_feats[name] for name in names})
  for name in names:
    if out[name].shape[1:] != t_feats[name].shape[1:]:
      raise ValueError(
          f'FitNet hint at {name}: the regressor maps the student map '
          f'{s_feats[name].shape[1:]} to {out[name].shape[1:]}, not to the '
          f'teacher map {t_feats[name].shape[1:]} (H, W, C); use another '
          'stage in config.points.')
  return hints


def teacher_variables_struct(distiller: Distiller, image_shape) -> Any:
  """The shapes and dtypes the teacher's variables must have."""
  return jax.eval_shape(
      lambda x: distiller.teacher.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
