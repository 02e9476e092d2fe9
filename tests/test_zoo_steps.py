"""A real distillation step for every model family of the registry."""

import jax
import numpy as np
import pytest

from adain_kd_jax import models
from adain_kd_jax.training import step_builder
from adain_kd_jax.training import steps
from configs import smoke
from tests.conftest import first_of_each_family
from tests.conftest import one_step

# (teacher, student, baseline or None), one pair per family; the baselines
# where the architectures meet them differently (spatial sizes, channels).
PAIRS = [
    ('wrn_16_2', 'wrn_16_1', 'fitnet'),
    ('vgg8', 'vgg8', None),
    ('vgg8', 'MobileNetV2', 'at'),
    ('resnet8x4', 'ShuffleV1', 'crd'),
    ('resnet8x4', 'ShuffleV2', None),
    ('ResNet50', 'MobileNetV2', None),
    ('resnet18', 'resnet18', None),
]
# A registry family that no pair above has: its first model with itself.
PAIRS += [(name, name, None) for name in first_of_each_family(
    exclude={models.MODELS[m].family for pair in PAIRS for m in pair[:2]})]
SHAPE = (32, 32, 3)
NUM_CLASSES = 10
N_DATA = 32


def _teacher_vars(name):
  model = models.create_model(name, NUM_CLASSES)
  return jax.jit(lambda k: model.init(k, np.zeros((1, *SHAPE), np.float32),
                                      train=False))(jax.random.key(1))


@pytest.mark.parametrize('teacher,student,baseline', PAIRS,
                         ids=[f'{t}-{s}' for t, s, _ in PAIRS])
def test_family_step(teacher, student, baseline):
  """adain_kd (and a baseline): finite, the student moves, the teacher not."""
  t_vars = _teacher_vars(teacher)
  t_before = jax.device_get(t_vars)
  labels = np.arange(N_DATA, dtype=np.int32) % NUM_CLASSES
  rng = np.random.default_rng(0)
  index = rng.permutation(N_DATA)[:8].astype(np.int32)
  batch = {'image': rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8),
           'label': labels[index], 'index': index}
  for method in ('adain_kd',) + ((baseline,) if baseline else ()):
    config = smoke.get_config()
    config.update(model=student, teacher=teacher, method=method)
    config.points = (-1,)  # S-1.
    config.crd.num_negatives = 8
    parts = step_builder.build_step(
        config, steps.create_mesh(), num_classes=NUM_CLASSES,
        image_shape=SHAPE, steps_per_epoch=1, total_steps=4,
        prep=steps.Preprocess(key=jax.random.key(2), mean=(0.5,) * 3,
                              std=(0.25,) * 3, crop_padding=4, flip=True),
        train_labels=labels)
    state = parts.init_state(jax.random.key(0))
    before = jax.device_get(state.params['student'])
    state, metrics = one_step(parts.multi_step)(state, t_vars, batch)
    metrics = jax.device_get(metrics)
    assert bool(metrics['finite']), (method, metrics)
    assert all(np.isfinite(metrics[t]) for t, _, _ in parts.distiller.terms)
    moved = [not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before),
        jax.tree.leaves(jax.device_get(state.params['student'])))]
    assert np.mean(moved) > 0.9, (method, np.mean(moved))
  jax.tree.map(np.testing.assert_array_equal, t_before,
               jax.device_get(t_vars))
