"""The DOT step (method dot): its masks derived from the objective, its
first steps against a float64 port of mdistiller's update fed with the two
gradients apart, a few training steps and a resume from a checkpoint."""

import dataclasses

import jax
import numpy as np

from adain_kd_jax.data import augment
from adain_kd_jax.methods import objective
from adain_kd_jax.training import checkpoints
from adain_kd_jax.training import dot
from adain_kd_jax.training import dot_step
from adain_kd_jax.training import step_builder
from adain_kd_jax.training import steps as steps_lib
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import one_step
from tests.conftest import train_a_few_steps
from tests.test_dot import _np_dot_steps

IMAGE_SHAPE = (28, 28, 1)
PREP = steps_lib.Preprocess(key=jax.random.key(1), mean=(0.3,), std=(0.35,),
                            crop_padding=0, flip=False)


def _config(method='dot', **overrides):
  config = smoke.get_config()
  config.update(model='resnet8', teacher='resnet8', method=method)
  config.loss.ce, config.loss.kd = 0.1, 0.9  # mdistiller's KD weights.
  config.update(overrides)
  return config


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (16, *IMAGE_SHAPE), dtype=np.uint8),
          'label': rng.integers(0, 10, 16).astype(np.int32)}


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v, np.float64)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_masks_follow_what_each_sum_reaches():
  """dot (KD): both sums reach every student parameter. FitNet's terms
  under DOT: the task misses the hint regressor, the hint misses the
  stages after its point and the classifier."""
  distiller = objective.create(_config(), 10, IMAGE_SHAPE)
  assert distiller.dot
  task, kd = dot_step.reach_masks(distiller, IMAGE_SHAPE)
  assert all(jax.tree.leaves(task)) and all(jax.tree.leaves(kd))
  fitnet = dataclasses.replace(objective.create(
      _config('fitnet', points=(2,), point_weights=(1.0,)), 10, IMAGE_SHAPE),
                               dot=True)
  task, kd = (_flat(m) for m in dot_step.reach_masks(fitnet, IMAGE_SHAPE))
  assert not any(v for k, v in task.items() if k.startswith("['hint']"))
  assert all(v for k, v in task.items() if k.startswith("['student']"))
  assert all(v for k, v in kd.items() if k.startswith("['hint']"))
  reached = {k for k, v in kd.items() if v}
  assert any('stage1' in k or 'layer1' in k for k in reached), reached
  assert not any('fc' in k for k in reached), reached
  assert not any('layer3' in k or 'stage3' in k for k in reached), reached


def test_first_steps_equal_the_float64_reference():
  """Three jitted DOT steps on eight simulated devices: the parameters as
  mdistiller's update in float64, fed with each step's task gradient
  (0.1 CE) and distillation gradient (0.9 KD) taken apart by two
  jax.grad calls."""
  config = _config()
  parts = step_builder.build_step(
      config, steps_lib.create_mesh(), num_classes=10,
      image_shape=IMAGE_SHAPE, prep=PREP, steps_per_epoch=10,
      total_steps=100)
  distiller, teacher_vars = parts.distiller, make_teacher_variables()
  state = parts.init_state(jax.random.key(0))
  start = _flat(jax.device_get(state.params))
  step_fn = one_step(parts.multi_step)
  grads, lrs = [], []
  for step in range(3):
    batch = _batch(step)
    params, batch_stats = jax.device_get((state.params, state.batch_stats))
    rng = jax.random.fold_in(PREP.key, step)
    images = augment.preprocess_train(
        batch['image'], rng, mean=PREP.mean, std=PREP.std, crop_padding=0,
        flip=False)
    args = (objective.NondiffVars(batch_stats=batch_stats, term_state={},
                                  teacher=teacher_vars),
            dict(batch, image=images), jax.random.fold_in(rng, 1), step)

    def part(p, name, args=args):
      _, (metrics, _) = distiller.loss_fn(p, *args)
      return distiller.weights[name] * metrics[name]

    grad = jax.jit(jax.grad(part), static_argnums=1)
    grads.append(tuple(_flat(grad(params, name)) for name in ('ce', 'kd')))
    lrs.append(float(parts.schedule(step)))
    state, _ = step_fn(state, teacher_vars, batch)
  every = {k: True for k in start}
  expected = _np_dot_steps(start, grads, lrs, 0.9 - dot.DOT_DELTA,
                           0.9 + dot.DOT_DELTA, config.weight_decay,
                           task_mask=every, kd_mask=every)
  got = _flat(jax.device_get(state.params))
  assert got.keys() == expected.keys()
  for k in got:
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-4, atol=1e-6,
                               err_msg=k)


def test_dot_trains_a_few_steps():
  """Four jitted DOT steps: finite, and the KD term and the total loss go
  down on a repeated batch."""
  values, totals, _ = train_a_few_steps(
      _config(), 'kd', _batch(1), make_teacher_variables(), IMAGE_SHAPE)
  assert np.all(np.isfinite(values)) and values[-1] < values[0], values
  assert totals[-1] < totals[0], totals


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
  """Two DOT steps, a checkpoint (DOT's count and both momenta in the
  optimiser state), restored, two more: bit for bit the four steps run
  without a stop."""
  parts = step_builder.build_step(
      _config(), steps_lib.create_mesh(), num_classes=10,
      image_shape=IMAGE_SHAPE, prep=PREP, steps_per_epoch=10,
      total_steps=100)
  step_fn, teacher_vars = one_step(parts.multi_step), make_teacher_variables()
  batches = [_batch(s) for s in range(4)]

  def run(state, todo):
    for batch in todo:
      state, _ = step_fn(state, teacher_vars, batch)
    return state

  straight = jax.device_get(run(parts.init_state(jax.random.key(0)),
                                batches))
  ckpt = checkpoints.RunCheckpointer(str(tmp_path / 'ckpt'), keep=1)
  ckpt.save(2, run(parts.init_state(jax.random.key(0)), batches[:2]), {})
  ckpt.wait()
  restored, _ = ckpt.restore(parts.state_shapes)
  ckpt.close()
  dot_state = [s for s in jax.tree.leaves(
      restored.opt_state, is_leaf=lambda x: isinstance(x, dot.DotState))
               if isinstance(s, dot.DotState)]
  assert len(dot_state) == 1 and int(dot_state[0].count) == 2
  resumed = jax.device_get(run(restored, batches[2:]))
  jax.tree.map(np.testing.assert_array_equal, resumed, straight)
