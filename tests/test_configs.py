"""Every row of the CIFAR-100 table parses, validates and traces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import config_checks
from adain_kd_jax import distill
from configs import cifar100_distill
from configs import cifar100_teacher
from configs import default
from configs import smoke
from configs import teacher

ROWS = cifar100_distill.TABLE


def _arg(t, s, m):
  return f'teacher={t},student={s},method={m}'


@pytest.mark.parametrize('method', list(distill.METHODS))
def test_every_method_parses_on_the_first_row(method):
  """get_config(teacher=..,student=..,method=..) for each method."""
  config = cifar100_distill.get_config(_arg('wrn_40_2', 'wrn_16_2', method))
  config_checks.check(config)
  assert (config.method, config.model, config.teacher) == (
      method, 'wrn_16_2', 'wrn_40_2')
  assert config.teacher_checkpoint == 'teachers/cifar100/wrn_40_2'
  distill.create(config, 100, (32, 32, 3))


@pytest.mark.parametrize('method', ['adain', 'at', 'fitnet'])
@pytest.mark.parametrize('row', ROWS, ids=['-'.join(r) for r in ROWS])
def test_table_row_traces(row, method):
  """The loss of each row traces: connector, AT and tail shapes agree."""
  config = cifar100_distill.get_config(_arg(*row, method))
  config_checks.check(config)
  d = distill.create(config, 100, (32, 32, 3))
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(d.init, jax.random.key(0), x)
  t_vars = distill.teacher_variables_struct(d, (32, 32, 3))
  loss, _ = jax.eval_shape(
      d.loss_fn, variables['params'], variables['batch_stats'], t_vars, x,
      jax.ShapeDtypeStruct((2,), jnp.int32))
  assert loss.shape == ()


def test_recipe_matches_the_benchmark():
  """Batch 64, 240 epochs, lr 0.05 / 0.01, decay at 150/180/210, wd 5e-4."""
  config = cifar100_distill.get_config(_arg('resnet56', 'resnet20', 'kd'))
  assert (config.batch_size, config.num_epochs, config.learning_rate,
          tuple(config.decay_epochs), config.weight_decay,
          config.schedule) == (64, 240.0, 0.05, (150, 180, 210), 5e-4,
                               'piecewise')
  assert (config.loss.ce, config.loss.kd) == (0.1, 0.9)
  low = cifar100_distill.get_config(_arg('vgg13', 'MobileNetV2', 'crd'))
  assert low.learning_rate == 0.01 and low.loss.crd == 0.8
  assert low.points == (3,)  # S-1 for the 4-stage MobileNetV2.
  assert cifar100_distill.get_config(_arg('vgg13', 'vgg8',
                                          'fitnet')).points == (2,)


def test_bad_config_argument():
  """An unknown key in the config argument names the valid ones."""
  with pytest.raises(ValueError, match='use teacher=NAME,student=NAME'):
    cifar100_distill.get_config('teacher=wrn_40_2,studnet=wrn_16_2')


def test_other_configs_validate():
  """default, smoke, teacher and the CIFAR-100 teacher configs are valid."""
  for config in (default.get_config(), smoke.get_config(),
                 teacher.get_config(),
                 cifar100_teacher.get_config('model=resnet110')):
    config_checks.check(config)
  assert cifar100_teacher.get_config('model=resnet110').model == 'resnet110'
  assert np.isclose(default.get_config().loss.adain, 0.3)


def test_imagenet_config_is_the_published_recipe():
  """ResNet-34 -> ResNet-18, 100 epochs, lr 0.1 per 256, decay 30/60/90."""
  from configs import imagenet_distill  # pylint: disable=g-import-not-at-top
  config = imagenet_distill.get_config('method=dkd')
  config_checks.check(config)
  assert (config.teacher, config.model, config.dataset) == (
      'resnet34', 'resnet18', 'imagenet2012')
  assert (config.num_epochs, config.learning_rate, config.weight_decay,
          tuple(config.decay_epochs), config.batch_size) == (
              100.0, 0.1, 1e-4, (30, 60, 90), 256)
  distill.create(config, 1000, (224, 224, 3))
