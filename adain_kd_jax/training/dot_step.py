"""The DOT step: the task and distillation gradients apart, one forward.

A method of `methods.DOT_METHODS` (`dot`: KD + DOT, mdistiller's
`configs/cifar100/dot/*.yaml`) trains with DOT (`training/dot.py`): its
optimiser keeps one momentum for the task terms' gradient
(`methods.TASK_TERMS`, the cross-entropy) and one for the distillation
terms' (every other term). `value_and_grads` runs the objective once
(`jax.vjp` of the pair of weighted sums) and pulls back two cotangents,
(1, 0) and (0, 1): one forward pass and two backward passes, where two
`value_and_grad` calls would also run the forward twice.

Which parameters each gradient reaches (DOT's masks) is derived from the
objective itself (`reach_masks`): the parameters a sum depends on in the
traced program, read off its jaxpr, not listed by hand.
"""

import functools

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import optax

from adain_kd_jax import methods
from adain_kd_jax.methods import objective
from adain_kd_jax.training import dot


def split_loss(distiller: objective.Distiller, params, *args, **kwargs):
  """((task, distillation), (metrics, updates)): `distiller.loss_fn` with
  its loss split into the weighted task terms and the weighted others."""
  _, (metrics, updated) = distiller.loss_fn(params, *args, **kwargs)
  parts = [0.0, 0.0]
  for name, _, weight in distiller.terms:
    parts[name not in methods.TASK_TERMS] += weight * metrics[name]
  return (jnp.asarray(parts[0]), jnp.asarray(parts[1])), (metrics, updated)


def value_and_grads(distiller, params, nondiff_vars, batch, rng, step,
                    teacher_out=None):
  """(metrics, updates, (task_grads, distillation_grads)) of one forward
  pass and two pullbacks."""
  (task, distill), pullback, (metrics, updated) = jax.vjp(
      functools.partial(split_loss, distiller, nondiff_vars=nondiff_vars,
                        batch=batch, rng=rng, step=step,
                        teacher_out=teacher_out),
      params, has_aux=True)
  one, zero = jnp.ones_like(task), jnp.zeros_like(task)
  (g_task,), (g_kd,) = pullback((one, zero)), pullback((zero, one))
  del distill
  return metrics, updated, (g_task, g_kd)


def _reached_inputs(jaxpr, out: int) -> list[bool]:
  """For each input of `jaxpr`, whether output `out` depends on it (a
  backward walk; an equation's inputs all count once one of its outputs
  does, except through stop_gradient)."""
  used = set()
  if isinstance(jaxpr.outvars[out], jex.Var):
    used.add(jaxpr.outvars[out])
  for eqn in reversed(jaxpr.eqns):
    if eqn.primitive.name == 'stop_gradient':
      continue
    if any(v in used for v in eqn.outvars if isinstance(v, jex.Var)):
      used.update(v for v in eqn.invars if isinstance(v, jex.Var))
  return [v in used for v in jaxpr.invars]


def reach_masks(distiller: objective.Distiller, image_shape,
                num_train: int = 0, train_labels=None):
  """(task_mask, kd_mask): trees of bools of the params' structure, whether
  the task sum and the distillation sum reach each parameter, from the
  objective's jaxpr on a batch of two."""
  images = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  variables = jax.eval_shape(distiller.init, jax.random.key(0), images)
  nondiff_vars = objective.NondiffVars(
      batch_stats=variables['batch_stats'],
      term_state=jax.eval_shape(functools.partial(
          distiller.init_term_state, num_train=max(num_train, 2),
          train_labels=train_labels), jax.random.key(0)),
      teacher=(None if distiller.teacher is None else
               objective.teacher_variables_struct(distiller, image_shape)))
  batch = {'image': images,
           'label': jax.ShapeDtypeStruct((2,), jnp.int32),
           'index': jax.ShapeDtypeStruct((2,), jnp.int32)}

  def losses(params, nondiff_vars, batch, rng, step):
    return split_loss(distiller, params, nondiff_vars, batch, rng, step)[0]

  closed = jax.make_jaxpr(losses)(
      variables['params'], nondiff_vars, batch,
      jax.ShapeDtypeStruct((), jax.random.key(0).dtype),
      jax.ShapeDtypeStruct((), jnp.int32))
  leaves, treedef = jax.tree.flatten(variables['params'])
  return tuple(
      jax.tree.unflatten(treedef, _reached_inputs(closed.jaxpr, out)
                         [:len(leaves)]) for out in (0, 1))


def create_optimizer(config, schedule: optax.Schedule, task_mask, kd_mask):
  """DOT with config's momentum and weight decay on `schedule`
  (mdistiller's delta, `dot.DOT_DELTA`)."""
  return dot.dot(schedule, momentum=config.momentum,
                 weight_decay=config.weight_decay, task_mask=task_mask,
                 kd_mask=kd_mask)
