"""The model set of a run and its training objective.

A `Distiller` holds the student, the frozen teacher (None for 'none'), the
modules trained with the student that its terms need (connectors, FitNet's
hint regressors, CRD's embedding heads) and the method's terms
(`methods.METHODS`, each a pure function of the step's outputs, weighted by
`config.loss.<term>`):
  L = sum_t weight_t * term_t(outputs)
e.g. adain: CE + alpha L_fm + beta L_adain (docs/method.md, "The
objective").

`loss_fn(params, frozen, batch, rng, step) -> (loss, (metrics, updates))`
differentiates `params` only: the student and its trained modules. The
teacher's variables (in `frozen`) are wrapped in `stop_gradient`, its
BatchNorm runs on running statistics (`train=False`) and nothing of it is
ever returned for update; gradients of the AdaIN loss still flow *through*
the frozen teacher tail into the student's statistics. Terms with state of
their own (CRD's memory bank) keep it in `frozen['aux'][term]`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax import methods
from adain_kd_jax import models
from adain_kd_jax.methods import connectors as connectors_lib
from adain_kd_jax.methods import crd_heads as crd_heads_lib

METHODS = methods.METHODS
check_method = methods.check_method


@dataclasses.dataclass(frozen=True)
class Distiller:
  """A student, an optional frozen teacher, trained modules and the terms.

  Attributes:
    student, teacher: the networks (teacher None for a method without one).
    terms: ((name, term, weight), ...) in summation order.
    connectors: connectors of the stages some term needs (params /
      batch_stats['connector']), or None.
    hints: FitNet's hint regressors (params / batch_stats['hint']), or None.
    crd_heads: CRD's embedding heads (params['crd']), or None.
  """
  student: nn.Module
  teacher: nn.Module | None
  terms: tuple[tuple[str, methods.Term, float], ...]
  connectors: connectors_lib.Connectors | None = None
  hints: connectors_lib.HintRegressors | None = None
  crd_heads: crd_heads_lib.CRDHeads | None = None

  @property
  def term(self) -> dict[str, methods.Term]:
    """Each term by name (to read its settings)."""
    return {name: t for name, t, _ in self.terms}

  @property
  def weights(self) -> dict[str, float]:
    return {name: w for name, _, w in self.terms}

  def init(self, rng, images_NHWC):
    """Returns {'params': {'student', ...}, 'batch_stats': ...}."""
    s_rng, c_rng, h_rng = jax.random.split(rng, 3)
    s_vars = self.student.init(s_rng, images_NHWC, train=False)
    params = {'student': s_vars['params']}
    batch_stats = {'student': s_vars['batch_stats']}
    if (self.connectors is not None or self.crd_heads is not None
        or self.hints is not None):
      _, s_feats = self.student.apply(s_vars, images_NHWC, train=False)
    # c_rng for both: connectors and hint regressors; no method has both.
    for key, module in (('connector', self.connectors),
                        ('hint', self.hints)):
      if module is not None:
        variables = module.init(c_rng, s_feats, train=False)
        params[key] = variables['params']
        batch_stats[key] = variables['batch_stats']
    if self.crd_heads is not None:
      t_dim = feature_shapes(self.teacher,
                           images_NHWC.shape[1:])['pre_logits']
      params['crd'] = self.crd_heads.init(
          h_rng, s_feats['pre_logits'],
          jnp.zeros(t_dim.shape, jnp.float32))['params']
    return {'params': params, 'batch_stats': batch_stats}

  def init_aux(self, rng, num_train: int, train_labels=None):
    """The state of the stateful terms ({term: state}; CRD's memory)."""
    return {name: t.init_state(rng, num_train, train_labels)
            for name, t, _ in self.terms if t.stateful}

  def predict(self, params, batch_stats, images_NHWC):
    """Student logits in inference mode (evaluation)."""
    logits, _ = self.student.apply(
        {'params': params['student'], 'batch_stats': batch_stats['student']},
        images_NHWC, train=False)
    return logits

  def teacher_outputs(self, teacher_vars, images_NHWC):
    """(logits_t_NK, feats_t) of the frozen teacher, under stop_gradient.

    What `loss_fn` computes for the teacher; the grid step (grid_step.py)
    computes it once per batch and hands it to every member's `loss_fn`.
    """
    t_vars = jax.lax.stop_gradient(teacher_vars)
    return jax.lax.stop_gradient(
        self.teacher.apply(t_vars, images_NHWC, train=False))

  def loss_fn(self, params, frozen, batch, rng, step, teacher_out=None):
    """The training objective.

    Args:
      params: the trained variables ({'student', ...}); differentiated.
      frozen: {'batch_stats', 'aux' (the stateful terms' state), 'teacher'
        (the frozen teacher's variables, None for 'none')}.
      batch: {'image': preprocessed float images, 'label': integer labels,
        'index' (optional): positions in the training set}.
      rng: a key for the terms that sample (CRD's negatives).
      step: the state's step (0-based; DKD's warm-up).
      teacher_out: None (the teacher runs here), or `teacher_outputs` of
        this batch computed by the caller (shared by a grid's members).

    Returns:
      (loss, (metrics, {'batch_stats', 'aux'})): metrics has every term's
      value, the loss and the batch accuracy.
    """
    out, batch_stats = self._outputs(params, frozen, batch, rng, step,
                                     teacher_out)
    values, aux = {}, dict(frozen['aux'])
    for name, term, _ in self.terms:
      if term.stateful:
        values[name], aux[name] = term(out, frozen['aux'][name])
      else:
        values[name] = term(out)
    loss = sum(w * values[name] for name, _, w in self.terms)
    metrics = dict(values, loss=loss, accuracy=jnp.mean(
        jnp.argmax(out.logits_s_NK, -1) == batch['label']))
    return loss, (metrics, {'batch_stats': batch_stats, 'aux': aux})

  def _outputs(self, params, frozen, batch, rng, step, teacher_out=None):
    """Runs the student, the teacher (unless given) and the trained
    modules once."""
    images, bs = batch['image'], frozen['batch_stats']
    (z_s, f_s), updates = self.student.apply(
        {'params': params['student'], 'batch_stats': bs['student']},
        images, train=True, mutable=['batch_stats'])
    new_bs = {'student': updates['batch_stats']}
    fields = {}
    if self.teacher is not None:
      t_vars = jax.lax.stop_gradient(frozen['teacher'])
      z_t, f_t = (self.teacher_outputs(frozen['teacher'], images)
                  if teacher_out is None else teacher_out)
      fields.update(logits_t_NK=z_t, feats_t=f_t, tail=lambda k, h: (
          self.teacher.apply(t_vars, h, start=k, train=False,
                             method='tail')))
    for key, field, module in (('connector', 'connected', self.connectors),
                               ('hint', 'hinted', self.hints)):
      if module is not None:
        fields[field], updates = module.apply(
            {'params': params[key], 'batch_stats': bs[key]}, f_s,
            train=True, mutable=['batch_stats'])
        new_bs[key] = updates['batch_stats']
    if self.crd_heads is not None:
      fields['embedded'] = self.crd_heads.apply(
          {'params': params['crd']}, f_s['pre_logits'],
          fields['feats_t']['pre_logits'])
    out = methods.Outputs(logits_s_NK=z_s, feats_s=f_s,
                          labels_N=batch['label'], step=step, rng=rng,
                          index_N=batch.get('index'), **fields)
    return out, new_bs


def create(config, num_classes: int, image_shape,
           steps_per_epoch: int = 1) -> Distiller:
  """Builds the Distiller for `config`: models, terms and what they need.

  Args:
    config: the run's config (method, model, teacher, loss, points, ...).
    num_classes: the data set's number of classes.
    image_shape: (H, W, C) of an input image.
    steps_per_epoch: for terms scheduled in epochs (DKD's warm-up).

  Raises:
    ValueError: naming the config field, for an unknown method or model, a
      missing teacher, stage counts that do not pair, or bad points.
  """
  check_method(config.method)
  dtype = jnp.dtype(config.dtype)
  student = models.create_model(config.model, num_classes, dtype=dtype)
  terms = methods.create_terms(
      config, methods.Context(num_stages=student.num_stages,
                              steps_per_epoch=steps_per_epoch))
  needs = [t.needs for _, t, _ in terms]
  teacher = None
  if any(n.teacher for n in needs):
    if not config.teacher:
      raise ValueError(f'config.method={config.method!r} needs a teacher: '
                       'set config.teacher (and config.teacher_checkpoint).')
    teacher = models.create_model(config.teacher, num_classes, dtype=dtype)
  if (any(n.same_stages for n in needs)
      and teacher.num_stages != student.num_stages):
    raise ValueError(
        f'config.model={config.model!r} has {student.num_stages} stages but '
        f'config.teacher={config.teacher!r} has {teacher.num_stages}; '
        'feature methods pair stage k with stage k.')
  connector_stages = sorted({k for n in needs for k in n.connector})
  hint_stages = sorted({k for n in needs for k in n.hint})
  embed = max((n.embed for n in needs), default=0)
  connectors = hints = crd_heads = None
  if connector_stages or hint_stages:
    t_feats = feature_shapes(teacher, image_shape)
    if connector_stages:
      connectors = connectors_lib.Connectors(
          channels=tuple((f'stage{k}', t_feats[f'stage{k}'].shape[-1])
                         for k in connector_stages), dtype=dtype,
          relu=bool(config.connector_relu))
    if hint_stages:
      hints = _hint_regressors(student, t_feats, hint_stages, image_shape,
                               dtype)
  if embed:
    crd_heads = crd_heads_lib.CRDHeads(dim=embed)
  return Distiller(student=student, teacher=teacher, terms=terms,
                   connectors=connectors, hints=hints, crd_heads=crd_heads)


def feature_shapes(model, image_shape):
  """The shapes of a network's features for one image."""
  return jax.eval_shape(
      lambda x: model.init_with_output(
          jax.random.key(0), x, train=False)[0][1],
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))


def _hint_regressors(student, t_feats, stages, image_shape, dtype):
  """FitNet's hint regressors at `stages`, checked against the teacher.

  Args:
    student: the student module.
    t_feats: the teacher's feature shapes (`feature_shapes`).
    stages: the stage numbers.
    image_shape: (H, W, C) of an input image.
    dtype: computation dtype.

  Returns:
    The `connectors.HintRegressors` for `stages`.

  Raises:
    ValueError: naming the stage, where no regressor maps the student's map
      to the teacher's shape.
  """
  s_feats = feature_shapes(student, image_shape)
  names = [f'stage{k}' for k in sorted(set(stages))]
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
