"""The model set of a run and its training objective.

A `Distiller` holds the student, the frozen teacher (None for 'none'), the
modules trained with the student that its terms declare (`Needs.adapters`,
e.g. connectors or CRD's embedding heads: built, initialised and applied in
one loop, each under its declaration's key in params / batch_stats) and the
method's terms
(`methods.METHODS`, each a pure function of the step's outputs, weighted by
`config.loss.<term>`):
  L = sum_t weight_t * term_t(outputs)
e.g. adain: CE + alpha L_fm + beta L_adain (docs/method.md, "The
objective").

`loss_fn(params, nondiff_vars, batch, rng, step) -> (loss, (metrics,
updates))` differentiates `params` only: the student and its trained
modules. `nondiff_vars` (`NondiffVars`) holds the variables that are not
differentiated: the batch statistics, the stateful terms' state (both
returned updated) and the teacher's variables. The teacher's are wrapped in
`stop_gradient`, its BatchNorm runs on running statistics (`train=False`)
and nothing of it is ever returned for update; gradients of the AdaIN loss
still flow *through* the frozen teacher tail into the student's statistics.
Terms with state of their own (CRD's memory bank) keep it in
`nondiff_vars['term_state'][term]`.
"""

import dataclasses
from typing import Any, TypedDict

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax import methods
from adain_kd_jax import models

METHODS = methods.METHODS


class NondiffVars(TypedDict):
  """The variables `Distiller.loss_fn` reads but does not differentiate.

  `batch_stats` and `term_state` come from the train state and go back to
  it updated (`loss_fn`'s {'batch_stats', 'term_state'}); the teacher's are
  read only.
  """
  batch_stats: Any  # BatchNorm statistics: {'student', adapter keys}.
  # The stateful terms' state by name (CRD's memory).
  term_state: dict[str, Any]
  teacher: Any  # The frozen teacher's variables; None without a teacher.


@dataclasses.dataclass(frozen=True)
class Distiller:
  """A student, an optional frozen teacher, trained modules and the terms.

  Attributes:
    student, teacher: the networks (teacher None for a method without one).
    terms: ((name, term, weight), ...) in summation order.
    adapters: ((declaration, module), ...): the modules trained with the
      student that the terms declare (`methods.Adapter`), one per key
      (params / batch_stats[key], `Outputs.adapted[key]`).
    init_steps: the length of the first phase in steps (terms with
      `init_trains`, config.init_epochs): before it, the loss is the sum of
      those terms' `init_loss`; 0 for none.
    dot: trained with DOT (`methods.DOT_METHODS`): the step takes the task
      and distillation gradients apart (training/dot_step.py).
  """
  student: nn.Module
  teacher: nn.Module | None
  terms: tuple[tuple[str, methods.Term, float], ...]
  adapters: tuple[tuple[methods.Adapter, nn.Module], ...] = ()
  init_steps: int = 0
  dot: bool = False

  @property
  def init_trains(self) -> tuple[str, ...]:
    """The params keys the first phase trains (its terms' `init_trains`)."""
    return tuple(dict.fromkeys(k for _, t, _ in self.terms
                               for k in t.init_trains))

  @property
  def term(self) -> dict[str, methods.Term]:
    """Each term by name (to read its settings)."""
    return {name: t for name, t, _ in self.terms}

  @property
  def weights(self) -> dict[str, float]:
    return {name: w for name, _, w in self.terms}

  def adapter(self, key: str) -> nn.Module | None:
    """The trained module declared under `key`, or None."""
    return next((m for a, m in self.adapters if a.key == key), None)

  def init(self, rng, images_NHWC):
    """Returns {'params': {'student', ...}, 'batch_stats': ...}.

    The student is initialised with `split(rng, 3)[0]`, an adapter with
    `split(rng, 3)[init_stream]` for streams 1 and 2 (the keys of the
    connectors / hint regressors and of CRD's heads before adapters were
    declared, kept so that runs start as before) and with
    `fold_in(rng, init_stream)` for later streams.
    """
    keys = jax.random.split(rng, 3)
    s_vars = self.student.init(keys[0], images_NHWC, train=False)
    params = {'student': s_vars['params']}
    batch_stats = {'student': s_vars['batch_stats']}
    if self.adapters:
      _, s_feats = self.student.apply(s_vars, images_NHWC, train=False)
      t_feats = None if self.teacher is None else {
          name: jnp.zeros(f.shape, jnp.float32) for name, f in
          feature_shapes(self.teacher, images_NHWC.shape[1:]).items()}
    for decl, module in self.adapters:
      key = (keys[decl.init_stream] if decl.init_stream < 3 else
             jax.random.fold_in(rng, decl.init_stream))
      variables = module.init(key, *decl.inputs(s_feats, t_feats),
                              **_train_arg(decl, False))
      # A module may have no variables (AB's connectors are identities
      # where the shapes agree): its entries are then empty.
      params[decl.key] = variables.get('params', {})
      if decl.batch_norm:
        batch_stats[decl.key] = variables.get('batch_stats', {})
    return {'params': params, 'batch_stats': batch_stats}

  def init_term_state(self, rng, num_train: int, train_labels=None):
    """The state of the stateful terms ({term: state}; CRD's memory)."""
    return {name: t.init_state(rng, num_train, train_labels)
            for name, t, _ in self.terms if t.stateful}

  @property
  def predictor(self) -> methods.Term | None:
    """The term that gives the model's logits (`Needs.predicts`: SimKD's
    student features through its projector and the teacher's
    classifier), or None: the student predicts alone."""
    return next((t for _, t, _ in self.terms if t.needs.predicts), None)

  @property
  def predicted_by(self) -> str | None:
    """What predicts, in words, where it is not the student alone (the
    run's summary says so); None for the student."""
    return None if self.predictor is None else self.predictor.predicted_by

  def predict(self, params, batch_stats, images_NHWC, teacher_vars=None):
    """The model's logits in inference mode (evaluation): the student's,
    or the predicting term's (`predictor`) from the student, the teacher
    (`teacher_vars`) and the trained modules, all in inference mode."""
    logits, f_s = jax.named_call(self.student.apply, name='student_forward')(
        {'params': params['student'], 'batch_stats': batch_stats['student']},
        images_NHWC, train=False)
    term = self.predictor
    if term is None:
      return logits
    if teacher_vars is None:
      raise ValueError(f'{term.predicted_by} predicts: evaluation needs the '
                       "teacher's variables.")
    fields = self._teacher_fields(teacher_vars, images_NHWC)
    adapted = {}
    for decl, module in self.adapters:
      variables = {'params': params[decl.key]}
      if decl.batch_norm:
        variables['batch_stats'] = batch_stats[decl.key]
      adapted[decl.key] = module.apply(
          variables, *decl.inputs(f_s, fields['feats_t']),
          **_train_arg(decl, False))
    return term.predict(methods.Outputs(
        logits_s_NK=logits, feats_s=f_s,
        labels_N=jnp.zeros(images_NHWC.shape[:1], jnp.int32),
        step=jnp.zeros((), jnp.int32), adapted=adapted, **fields))

  def teacher_outputs(self, teacher_vars, images_NHWC):
    """(logits_t_NK, feats_t) of the frozen teacher, under stop_gradient.

    What `loss_fn` computes for the teacher; the grid step (grid_step.py)
    computes it once per batch and hands it to every member's `loss_fn`.
    """
    t_vars = jax.lax.stop_gradient(teacher_vars)
    return jax.lax.stop_gradient(jax.named_call(
        self.teacher.apply, name='teacher_forward')(t_vars, images_NHWC,
                                                    train=False))

  def loss_fn(self, params, nondiff_vars: NondiffVars, batch, rng, step,
              teacher_out=None):
    """The training objective.

    Args:
      params: the trained variables ({'student', ...}); differentiated.
      nondiff_vars: the batch statistics, the stateful terms' state and the
        teacher's variables (`NondiffVars`); not differentiated.
      batch: {'image': preprocessed float images, 'label': integer labels,
        'index' (optional): positions in the training set}.
      rng: a key for the terms that sample (CRD's negatives).
      step: the state's step (0-based; DKD's warm-up).
      teacher_out: None (the teacher runs here), or `teacher_outputs` of
        this batch computed by the caller (shared by a grid's members).

    Returns:
      (loss, (metrics, {'batch_stats', 'term_state'})): metrics has every
      term's value, the loss and the batch accuracy. In the first phase
      (`step` < `init_steps`) the loss is the sum of the phase's
      `init_loss`es.
    """
    out, batch_stats = self._outputs(params, nondiff_vars, batch, rng, step,
                                     teacher_out)
    values, term_state = {}, dict(nondiff_vars['term_state'])
    for name, term, _ in self.terms:
      if term.stateful:
        values[name], term_state[name] = term(
            out, nondiff_vars['term_state'][name])
      else:
        values[name] = term(out)
    loss = sum(w * values[name] for name, _, w in self.terms)
    if self.init_steps:  # The phase from the step, inside the one program.
      init_loss = sum(t.init_loss(out) for _, t, _ in self.terms
                      if t.init_trains)
      loss = jnp.where(jnp.asarray(step) < self.init_steps, init_loss, loss)
    # The model's accuracy: the predicting term's logits where one is.
    logits = (out.logits_s_NK if self.predictor is None
              else self.predictor.predict(out))
    metrics = dict(values, loss=loss, accuracy=jnp.mean(
        jnp.argmax(logits, -1) == batch['label']))
    return loss, (metrics, {'batch_stats': batch_stats,
                             'term_state': term_state})

  def _teacher_fields(self, teacher_vars, images, teacher_out=None):
    """The teacher's `Outputs` fields: logits, features (computed here
    unless `teacher_out` gives them), its tail and its methods."""
    t_vars = jax.lax.stop_gradient(teacher_vars)
    z_t, f_t = (self.teacher_outputs(teacher_vars, images)
                if teacher_out is None else teacher_out)
    return dict(
        logits_t_NK=z_t, feats_t=f_t, tail=lambda k, h: (
            jax.named_call(self.teacher.apply, name='teacher_tail')(
                t_vars, h, start=k, train=False, method='tail')),
        teacher_method=lambda name, *args: self.teacher.apply(
            t_vars, *args, method=name))

  def _outputs(self, params, nondiff_vars, batch, rng, step,
               teacher_out=None):
    """Runs the student, the teacher (unless given) and the trained
    modules once."""
    images, bs = batch['image'], nondiff_vars['batch_stats']
    # Named, so that profiles (jax.profiler, XProf) show the forwards apart.
    (z_s, f_s), updates = jax.named_call(
        self.student.apply, name='student_forward')(
            {'params': params['student'], 'batch_stats': bs['student']},
            images, train=True, mutable=['batch_stats'])
    new_bs = {'student': updates['batch_stats']}
    fields = {}
    if self.teacher is not None:
      fields = self._teacher_fields(nondiff_vars['teacher'], images,
                                    teacher_out)
    adapted = fields['adapted'] = {}
    for decl, module in self.adapters:
      args = decl.inputs(f_s, fields.get('feats_t'))
      kwargs = _train_arg(decl, True)
      if decl.batch_norm:  # Batch statistics, updated.
        adapted[decl.key], updates = module.apply(
            {'params': params[decl.key], 'batch_stats': bs[decl.key]},
            *args, mutable=['batch_stats'], **kwargs)
        new_bs[decl.key] = updates.get('batch_stats', {})
      else:
        adapted[decl.key] = module.apply({'params': params[decl.key]},
                                         *args, **kwargs)
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
      missing teacher, stage counts that do not pair, bad points, or
      features a term cannot pair (`Term.check_shapes`).
  """
  methods.check_method(config.method)
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
  if any(n.same_channels for n in needs):
    _check_same_channels(config, student, teacher, image_shape)
  predicting = [name for name, t, _ in terms if t.needs.predicts]
  if len(predicting) > 1:
    raise ValueError(f'config.method={config.method!r}: the terms '
                     f'{predicting} each predict; at most one may.')
  adapters = _declared_adapters(needs)
  checking = [t for _, t, _ in terms
              if type(t).check_shapes is not methods.Term.check_shapes]
  if adapters or checking:
    shapes = methods.Shapes(
        student=feature_shapes(student, image_shape),
        teacher=None if teacher is None else feature_shapes(teacher,
                                                            image_shape),
        dtype=dtype)
    for t in checking:
      t.check_shapes(config, shapes)
    adapters = tuple((a, a.build(config, shapes)) for a in adapters)
  init_steps = 0
  if any(t.init_trains for _, t, _ in terms):
    init_steps = int(round(float(config.init_epochs) * steps_per_epoch))
  return Distiller(student=student, teacher=teacher, terms=terms,
                   adapters=adapters, init_steps=init_steps,
                   dot=config.method in methods.DOT_METHODS)


def _check_same_channels(config, student, teacher, image_shape) -> None:
  """ValueError in one line unless every stage of the two networks has the
  same channel count (`Needs.same_channels`)."""
  widths = []
  for model in (student, teacher):
    shapes = feature_shapes(model, image_shape)
    widths.append(tuple(shapes[f'stage{k}'].shape[-1]
                        for k in range(1, model.num_stages + 1)))
  if widths[0] != widths[1]:
    raise ValueError(
        f'config.method={config.method!r} needs the same channel count at '
        f'every stage: config.model={config.model!r} has {widths[0]}, '
        f'config.teacher={config.teacher!r} has {widths[1]}; pick a pair of '
        'equal widths (e.g. resnet32x4 -> resnet8x4).')


def _declared_adapters(needs) -> tuple[methods.Adapter, ...]:
  """The terms' adapter declarations, one per key (merged), in the order
  they are first declared."""
  merged = {}
  for n in needs:
    for a in n.adapters:
      merged[a.key] = merged[a.key].merge(a) if a.key in merged else a
  if 'student' in merged:
    raise ValueError("An adapter's key may not be 'student'.")
  return tuple(merged.values())


def _train_arg(decl: methods.Adapter, train: bool) -> dict[str, bool]:
  """`train=` for a module with BatchNorm, else nothing."""
  return {'train': train} if decl.batch_norm else {}


def feature_shapes(model, image_shape):
  """The shapes of a network's features for one image."""
  return jax.eval_shape(
      lambda x: model.init_with_output(
          jax.random.key(0), x, train=False)[0][1],
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))


def teacher_variables_struct(distiller: Distiller, image_shape) -> Any:
  """The shapes and dtypes the teacher's variables must have."""
  return jax.eval_shape(
      lambda x: distiller.teacher.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
