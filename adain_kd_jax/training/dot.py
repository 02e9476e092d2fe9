"""DOT, the distillation-oriented trainer (Zhao et al., ICCV 2023), as an
optax transformation.

Written after mdistiller's `mdistiller/engine/dot.py`
(`DistillationOrientedTrainer` and its `dot` update) and the `DOT` trainer
of `engine/trainer.py`: SGD whose task gradient (cross-entropy) and
distillation gradient each have their own momentum buffer, the task's with
momentum `momentum - delta`, the distillation's with `momentum + delta`
(mdistiller's CIFAR-100 recipes: momentum 0.9, delta 0.075). For a
parameter that gets both gradients:

  b_task <- (m - delta) b_task + g_task + wd p,
  b_kd   <- (m + delta) b_kd + g_kd,
  p      <- p - lr (b_task + b_kd);

a parameter that gets one gradient only (a connector: the distillation's;
a classifier that a feature loss does not reach: the task's) has that
buffer alone, with momentum `m` (the mean of the two) and the weight decay
added to its gradient. On the first step each buffer is its gradient as
given (the distillation's without weight decay even for a parameter that
has no task gradient: mdistiller's `torch.clone(d_p)` before its weight
decay).

Which parameters get which gradient is structural in PyTorch (a gradient of
None); here it is given as two boolean trees of the params' structure,
`task_mask` and `kd_mask`. The transformation's `update` takes the pair
`(task_grads, kd_grads)` as its updates; the step of a method trained with
DOT (`training/dot_step.py`) differentiates the task and distillation
terms apart and derives the masks (docs/method.md, "Baselines").
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

DOT_DELTA = 0.075  # mdistiller's SOLVER.DOT.DELTA (every CIFAR-100 recipe).


class DotState(NamedTuple):
  """The step count and the two momentum buffers."""
  count: jax.Array
  task_momentum: Any
  kd_momentum: Any


def dot(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.9,
        delta: float = DOT_DELTA, weight_decay: float = 0.0, *,
        task_mask: Any, kd_mask: Any) -> optax.GradientTransformation:
  """DOT's update as an optax transformation (see the module docstring).

  Args:
    learning_rate: a float or a schedule of the step count.
    momentum: the mean of the two momenta (mdistiller's SOLVER.MOMENTUM).
    delta: the task's momentum is `momentum - delta`, the distillation's
      `momentum + delta`.
    weight_decay: torch's, added to the task gradient (or to the one
      gradient of a parameter that gets one).
    task_mask, kd_mask: trees of bools of the params' structure: which
      parameters the task loss and the distillation loss reach.

  Raises:
    ValueError: for momenta outside [0, 1) or a negative weight decay.
  """
  m_task, m_kd = momentum - delta, momentum + delta
  if not 0.0 <= m_task <= m_kd < 1.0 or weight_decay < 0.0:
    raise ValueError(
        f'DOT: momentum {momentum} -/+ delta {delta} must lie in [0, 1) '
        f'and weight_decay {weight_decay} be >= 0.')
  m_mean = (m_task + m_kd) / 2.0
  lr = (learning_rate if callable(learning_rate)
        else (lambda _: learning_rate))

  def init_fn(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return DotState(count=jnp.zeros([], jnp.int32), task_momentum=zeros,
                    kd_momentum=jax.tree.map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('DOT needs the params (its weight decay).')
    g_task, g_kd = updates
    first = state.count == 0

    def task_buf(g, p, buf, in_task, in_kd):
      d_p = g + weight_decay * p
      new = (m_task if in_kd else m_mean) * buf + d_p
      return jnp.where(first, d_p, new) if in_task else buf

    def kd_buf(g, p, buf, in_task, in_kd):
      if not in_kd:
        return buf
      if in_task:
        new = m_kd * buf + g
      else:
        new = m_mean * buf + g + weight_decay * p
      return jnp.where(first, g, new)

    b_task = jax.tree.map(task_buf, g_task, params, state.task_momentum,
                          task_mask, kd_mask)
    b_kd = jax.tree.map(kd_buf, g_kd, params, state.kd_momentum, task_mask,
                        kd_mask)
    rate = lr(state.count)
    new_updates = jax.tree.map(
        lambda bt, bk, in_task, in_kd: -rate * (
            (bt if in_task else 0.0) + (bk if in_kd else 0.0)),
        b_task, b_kd, task_mask, kd_mask)
    return new_updates, DotState(count=state.count + 1, task_momentum=b_task,
                                 kd_momentum=b_kd)

  return optax.GradientTransformation(init_fn, update_fn)
