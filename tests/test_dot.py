"""DOT's optax transformation against a float64 numpy port of mdistiller's
`DistillationOrientedTrainer` over several steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from adain_kd_jax.training import dot

# Three parameters: one both losses reach (a backbone weight), one only the
# distillation reaches (a connector), one only the task reaches (a
# classifier that a feature loss does not reach).
TASK_MASK = {'both': True, 'kd_only': False, 'task_only': True}
KD_MASK = {'both': True, 'kd_only': True, 'task_only': False}
SHAPES = {'both': (3, 4), 'kd_only': (5,), 'task_only': (2, 2)}


def _np_dot_steps(params, grads, lrs, momentum, m_kd, wd,
                  task_mask=None, kd_mask=None):
  """mdistiller's DistillationOrientedTrainer: step_kd() then step() per
  iteration; a parameter without a gradient (None) as the masks say
  (flat dicts; TASK_MASK and KD_MASK unless given)."""
  task_mask = TASK_MASK if task_mask is None else task_mask
  kd_mask = KD_MASK if kd_mask is None else kd_mask
  p = {k: v.copy() for k, v in params.items()}
  buf, kd_buf = {}, {}
  for (g_task, g_kd), lr in zip(grads, lrs):
    task_params = [k for k in p if task_mask[k]]
    kd_params = [k for k in p if kd_mask[k]]
    for k in task_params:  # dot(): the task loop.
      d_p = g_task[k] + wd * p[k]
      if k not in buf:
        buf[k] = d_p.copy()
      elif k in kd_params:
        buf[k] = momentum * buf[k] + d_p
      else:
        buf[k] = (m_kd + momentum) / 2 * buf[k] + d_p
      p[k] = p[k] - lr * buf[k]
    for k in kd_params:  # dot(): the distillation loop.
      d_p = g_kd[k]
      if k not in kd_buf:
        kd_buf[k] = d_p.copy()
      elif k in task_params:
        kd_buf[k] = m_kd * kd_buf[k] + d_p
      else:
        d_p = d_p + wd * p[k]
        kd_buf[k] = (m_kd + momentum) / 2 * kd_buf[k] + d_p
      p[k] = p[k] - lr * kd_buf[k]
  return p


def test_dot_matches_the_float64_reference():
  """Five steps with a decaying learning rate: every parameter to float64
  rounding (momentum 0.9 +- 0.075, weight decay 5e-4, as mdistiller's
  CIFAR-100 recipe)."""
  rng = np.random.default_rng(0)
  params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
  grads = [tuple({k: rng.normal(size=s) for k, s in SHAPES.items()}
                 for _ in range(2)) for _ in range(5)]
  lrs = [0.05 * 0.9 ** i for i in range(5)]
  expected = _np_dot_steps(params, grads, lrs, 0.9 - 0.075, 0.9 + 0.075,
                           5e-4)
  with jax.enable_x64():
    tx = dot.dot(lambda count: 0.05 * 0.9 ** count, momentum=0.9,
                 delta=0.075, weight_decay=5e-4, task_mask=TASK_MASK,
                 kd_mask=KD_MASK)
    p = jax.tree.map(jnp.asarray, params)
    state = tx.init(p)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p))
    for g in grads:
      updates, state = step(jax.tree.map(jnp.asarray, g), state, p)
      p = optax.apply_updates(p, updates)
  for k in SHAPES:
    np.testing.assert_allclose(p[k], expected[k], rtol=1e-13, atol=1e-15)
  assert int(state.count) == 5


def test_dot_with_no_delta_and_one_loss_is_sgd():
  """delta 0 and the distillation reaching nothing: optax's SGD with
  momentum and torch's weight decay."""
  rng = np.random.default_rng(1)
  params = {'w': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  tx = dot.dot(0.1, momentum=0.9, delta=0.0, weight_decay=1e-3,
               task_mask={'w': True}, kd_mask={'w': False})
  ref = optax.chain(optax.add_decayed_weights(1e-3),
                    optax.sgd(0.1, momentum=0.9))
  p, q = params, params
  s, r = tx.init(p), ref.init(q)
  for i in range(3):
    g = {'w': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
    u, s = tx.update((g, jax.tree.map(jnp.zeros_like, g)), s, p)
    v, r = ref.update(g, r, q)
    p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
  np.testing.assert_allclose(p['w'], q['w'], rtol=1e-6)


def test_dot_bad_settings():
  """Momenta outside [0, 1) are refused naming DOT."""
  with pytest.raises(ValueError, match='DOT'):
    dot.dot(0.1, momentum=0.95, delta=0.075, task_mask={}, kd_mask={})
