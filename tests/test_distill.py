"""One real distillation step per method: the student learns, the teacher not."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adain_kd_jax import methods
from adain_kd_jax.methods import objective
from adain_kd_jax.training import step_builder
from adain_kd_jax.training import steps
from configs import smoke
from tests.conftest import make_teacher_variables
from tests.conftest import one_step

IMAGE_SHAPE = (28, 28, 1)


def _config(method, **loss):
  config = smoke.get_config()
  config.model = 'resnet8'
  config.teacher = 'resnet8'
  config.method = method
  config.crd.num_negatives = 16  # The test "data set" has 64 examples.
  for k, v in loss.items():
    config.loss[k] = v
  return config


TRAIN_LABELS = np.arange(64, dtype=np.int32) % 10


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  index = rng.permutation(64)[:n].astype(np.int32)
  return {'image': rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8),
          'label': TRAIN_LABELS[index], 'index': index}


def _prep(config):
  return steps.Preprocess(key=jax.random.key(1), mean=(0.3,), std=(0.35,),
                          crop_padding=config.crop_padding, flip=config.flip)


def _loss(distiller, params, batch_stats, teacher_vars, images, labels_N,
          step=0):
  """distiller.loss_fn on a batch without indices; (loss, (metrics,
  new_batch_stats, new_term_state))."""
  nondiff_vars = {'batch_stats': batch_stats, 'term_state': {},
                  'teacher': teacher_vars}
  loss, (metrics, updated) = distiller.loss_fn(
      params, nondiff_vars, {'image': images, 'label': labels_N},
      jax.random.key(0), step)
  return loss, (metrics, updated['batch_stats'], updated['term_state'])


def _student_train(distiller, variables, images):
  """The student's (logits, features) in training mode, as loss_fn runs it."""
  return distiller.student.apply(
      {'params': variables['params']['student'],
       'batch_stats': variables['batch_stats']['student']},
      images, train=True, mutable=['batch_stats'])[0]


def _build(config, mesh):
  """`config`'s step as a run builds it (`step_builder.build_step`).

  One step per epoch: the terms scheduled in epochs (DKD's warm-up) count
  steps, and the cosine schedule without warm-up does not depend on it.
  """
  return step_builder.build_step(
      config, mesh, num_classes=10, image_shape=IMAGE_SHAPE,
      prep=_prep(config), steps_per_epoch=1, total_steps=100,
      train_labels=TRAIN_LABELS)


def _setup(config, mesh):
  """(fresh state, the jitted step one step a call) of `config` on `mesh`."""
  parts = _build(config, mesh)
  return parts.init_state(jax.random.key(0)), one_step(parts.multi_step)


@pytest.mark.parametrize('method', list(methods.METHODS))
def test_one_step_updates_student_only(method):
  """Every student (and connector) leaf moves; teacher variables do not."""
  config = _config(method)
  parts = _build(config, steps.create_mesh())
  distiller, state = parts.distiller, parts.init_state(jax.random.key(0))
  p_train_step = one_step(parts.multi_step)
  teacher_vars = make_teacher_variables()
  teacher_before = jax.device_get(teacher_vars)
  params_before = jax.device_get(state.params)
  term_state_before = jax.device_get(state.term_state)
  new_state, metrics = p_train_step(state, teacher_vars, _batch())
  metrics = jax.device_get(metrics)

  assert int(new_state.step) == 1
  # Terms of weight 0 (fm, stat_mean by default) are left out.
  expected_terms = set(t for t in methods.METHODS[method]
                       if t == 'ce' or config.loss[t] != 0)
  assert expected_terms <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), params_before,
                       jax.device_get(new_state.params))
  if distiller.predictor is not None:
    # Its model predicts without the student's classifier (SimKD), which no
    # term reads: only weight decay moves its kernel, its zero bias stays.
    assert not moved['student']['fc']['bias']
    del moved['student']['fc']
  assert all(jax.tree.leaves(moved))
  # One trained module per adapter key the terms declare (BatchNorm ones
  # with batch statistics), nothing else.
  declared = [a for _, t, _ in distiller.terms for a in t.needs.adapters]
  assert set(new_state.params) == {'student'} | {a.key for a in declared}
  assert set(new_state.batch_stats) == {'student'} | {
      a.key for a in declared if a.batch_norm}
  if 'crd' in distiller.term:  # The memory bank moved at the batch's rows.
    rows = np.asarray(jax.device_get(new_state.term_state['crd']['memory_s']))
    before = np.asarray(jax.device_get(term_state_before['crd']['memory_s']))
    changed = np.flatnonzero(np.any(rows != before, axis=1))
    np.testing.assert_array_equal(changed, np.sort(_batch()['index']))
  jax.tree.map(np.testing.assert_array_equal, teacher_before,
               jax.device_get(teacher_vars))


def test_adain_gradients_reach_student_and_connector_not_teacher():
  """d L_adain / d(student, connector) != 0 and d L_adain / d teacher == 0."""
  config = _config('adain', ce=0.0, adain=1.0)  # The AdaIN term alone.
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  variables = distiller.init(jax.random.key(0),
                             jnp.zeros((1, *IMAGE_SHAPE)))
  teacher_vars = make_teacher_variables()
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0

  def loss(params, t_vars):
    return _loss(distiller, params, variables['batch_stats'], t_vars,
                 images, batch['label'])[0]

  g_params, g_teacher = jax.grad(loss, argnums=(0, 1))(
      variables['params'], teacher_vars)
  for part in ('student', 'connector'):
    norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(g_params[part])]
    assert max(norms) > 0, part
  # The student's classifier does not enter L_adain: its gradient is zero.
  assert float(jnp.abs(g_params['student']['fc']['kernel']).max()) == 0.0
  assert all(float(jnp.abs(g).max()) == 0.0
             for g in jax.tree.leaves(g_teacher))


def test_teacher_batch_norm_statistics_never_change():
  """loss_fn returns no teacher statistics; its BN runs on running stats."""
  config = _config('adain_kd')
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  variables = distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  teacher_vars = make_teacher_variables()
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0
  _, (_, new_stats, _) = _loss(distiller, variables['params'],
                               variables['batch_stats'], teacher_vars,
                               images, batch['label'])
  assert set(new_stats) == {'student', 'connector'}
  # The teacher's logits inside the loss are its inference-mode logits.
  z_t, _ = distiller.teacher.apply(teacher_vars, images, train=False)
  kd_distiller = objective.create(_config('kd', ce=0.0), 10, IMAGE_SHAPE)
  _, (metrics, _, _) = _loss(kd_distiller, variables['params'],
                             variables['batch_stats'], teacher_vars, images,
                             batch['label'])
  z_s, _ = _student_train(distiller, variables, images)
  from adain_kd_jax import losses
  np.testing.assert_allclose(metrics['kd'], losses.kd(z_s, z_t), rtol=1e-5)


def test_sharded_step_equals_single_device_step():
  """8 devices and 1 device give the same step on the same global batch."""
  assert jax.device_count() == 8
  config = _config('adain_kd')
  teacher_vars = make_teacher_variables()
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    state, p_train_step = _setup(config, steps.create_mesh(devices))
    for i in range(2):
      state, metrics = p_train_step(state, teacher_vars, _batch(32, seed=i))
    results.append(jax.device_get((state.params, state.batch_stats,
                                   metrics)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4,
                                                       atol=2e-5),
               results[0], results[1])


@pytest.mark.parametrize('field,value,message', [
    ('method', 'crd2', 'Unknown method'),
    ('points', (4,), 'outside 1..3'),
    ('points', (-3,), r'stage -3, outside 1..3 \(or -2..0 counted from'),
    ('point_weights', (1.0, 2.0), 'same length'),
])
def test_bad_method_config(field, value, message):
  """Bad method settings fail with an error naming the field."""
  config = _config('adain')
  config[field] = value
  with pytest.raises(ValueError, match=message):
    objective.create(config, 10, IMAGE_SHAPE)


def test_points_may_count_from_the_last_stage():
  """0 is S and -1 is S-1, for every term that reads config.points."""
  for method, key in (('adain', 'adain'), ('stat_l2', 'stat_l2'),
                      ('fitnet', 'fitnet')):
    config = _config(method)
    config.points, config.point_weights = (0, -1), (1.0, 0.5)
    term = objective.create(config, 10, IMAGE_SHAPE).term[key]
    assert (term.points, term.point_weights) == ((3, 2), (1.0, 0.5))


def test_logit_mse_is_one_term_and_one_config_block():
  """The method added as a term: CE + w * mean((z_s - z_t)^2)."""
  config = _config('logit_mse', logit_mse=0.5)
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  assert [(n, w) for n, _, w in distiller.terms] == [('ce', 1.0),
                                                    ('logit_mse', 0.5)]
  variables = distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  teacher_vars = make_teacher_variables()
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0
  loss, (metrics, _, _) = _loss(distiller, variables['params'],
                                variables['batch_stats'], teacher_vars,
                                images, batch['label'])
  z_s, _ = _student_train(distiller, variables, images)
  z_t, _ = distiller.teacher.apply(teacher_vars, images, train=False)
  expected = np.mean(np.square(np.asarray(z_s) - np.asarray(z_t)))
  np.testing.assert_allclose(metrics['logit_mse'], expected, rtol=1e-5)
  np.testing.assert_allclose(loss, metrics['ce'] + 0.5 * expected, rtol=1e-5)


@pytest.mark.parametrize('method', list(methods.METHODS))
def test_a_method_reads_exactly_the_settings_its_terms_declare(method):
  """With every other method's settings removed from the config, the method
  builds and initialises; without any one of its own, it cannot."""
  declared = methods.setting_fields(method)

  def build(drop):
    config = _config(method)
    for field in drop:
      del config[field]
    distiller = objective.create(config, 10, IMAGE_SHAPE)
    distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))

  build([f for f in methods.SETTING_FIELDS if f not in declared])
  for field in declared:
    with pytest.raises((AttributeError, KeyError)):
      build([field])


def test_a_zero_weight_term_computes_nothing():
  """kd with loss.kd=0 is CE alone: no teacher is built or loaded."""
  distiller = objective.create(_config('kd', kd=0.0), 10, IMAGE_SHAPE)
  assert [n for n, _, _ in distiller.terms] == ['ce']
  assert distiller.teacher is None


def test_dkd_warm_up_and_at_sum_are_wired_as_published():
  """DKD is scaled by min(epoch / 20, 1); AT sums every stage pair."""
  from adain_kd_jax.losses import baselines as losses_baselines
  teacher_vars = make_teacher_variables()
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0
  for method, epoch, factor in (('dkd', 10.0, 0.5), ('dkd', 30.0, 1.0),
                                ('at', 1.0, 1.0)):
    distiller = objective.create(_config(method), 10, IMAGE_SHAPE)
    variables = distiller.init(jax.random.key(0),
                               jnp.zeros((1, *IMAGE_SHAPE)))
    _, (metrics, _, _) = _loss(distiller, variables['params'],
                               variables['batch_stats'], teacher_vars,
                               images, batch['label'], step=int(epoch) - 1)
    z_s, f_s = _student_train(distiller, variables, images)
    z_t, f_t = distiller.teacher.apply(teacher_vars, images, train=False)
    if method == 'dkd':
      expected = factor * losses_baselines.dkd(
          z_s, z_t, batch['label'], alpha=1.0, beta=8.0, temperature=4.0)
    else:
      expected = sum(losses_baselines.at(f_t[f'stage{k}'], f_s[f'stage{k}'])
                     for k in (1, 2, 3))
    np.testing.assert_allclose(metrics[method], expected, rtol=1e-5)


def _adain_parts(config, step=0):
  """(loss, metrics, connected features, teacher features, teacher logits,
  tail, labels) of one loss_fn call, for checking the AdaIN family by hand."""
  distiller = objective.create(config, 10, IMAGE_SHAPE, steps_per_epoch=10)
  variables = distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  teacher_vars = make_teacher_variables()
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0
  loss, (metrics, _, _) = _loss(distiller, variables['params'],
                                variables['batch_stats'], teacher_vars,
                                images, batch['label'], step=step)
  _, f_s = _student_train(distiller, variables, images)
  connected = distiller.adapter('connector').apply(
      {'params': variables['params']['connector'],
       'batch_stats': variables['batch_stats']['connector']}, f_s,
      train=True, mutable=['batch_stats'])[0]
  z_t, f_t = distiller.teacher.apply(teacher_vars, images, train=False)
  tail = lambda k, h: distiller.teacher.apply(teacher_vars, h, start=k,
                                              train=False, method='tail')
  return loss, metrics, connected, f_t, z_t, tail, batch['label']


def test_adain_kl_takes_its_own_temperature_not_kds():
  """loss.adain_temperature sets AdaIN's KL; loss.temperature is KD's."""
  from adain_kd_jax import losses
  config = _config('adain_kd', adain_kind='kl', temperature=2.0,
                   adain_temperature=8.0)
  config.points, config.point_weights = (2,), (1.0,)
  _, metrics, con, f_t, z_t, tail, labels = _adain_parts(config)
  expected = losses.adain_loss(f_t['stage2'], con['stage2'], z_t,
                               lambda h: tail(2, h), kind='kl',
                               temperature=8.0, labels_N=labels)
  np.testing.assert_allclose(metrics['adain'], expected, rtol=1e-5)
  other = losses.adain_loss(f_t['stage2'], con['stage2'], z_t,
                            lambda h: tail(2, h), kind='kl',
                            temperature=2.0, labels_N=labels)
  assert abs(float(other) - float(expected)) > 1e-3 * abs(float(expected))
  term = objective.create(config, 10, IMAGE_SHAPE).term
  assert (term['adain'].temperature, term['kd'].temperature) == (8.0, 2.0)


@pytest.mark.parametrize('step,factor', [(0, 0.0), (5, 0.25), (20, 1.0),
                                         (35, 1.0)])
def test_adain_warm_up_scales_the_term_linearly(step, factor):
  """loss.adain_warmup_epochs=2 at 10 steps per epoch: min(step / 20, 1)."""
  from adain_kd_jax import losses
  config = _config('adain', adain_warmup_epochs=2.0)
  _, metrics, con, f_t, z_t, tail, labels = _adain_parts(config, step=step)
  plain = losses.adain_loss(f_t['stage3'], con['stage3'], z_t,
                            lambda h: tail(3, h), labels_N=labels)
  np.testing.assert_allclose(metrics['adain'], factor * plain, rtol=1e-5,
                             atol=1e-7)


def test_the_authors_form_adds_a_mean_only_statistics_term():
  """adain + loss.stat_mean: CE + b L_adain + w mean_{n,c}(mu_s - mu_t)^2,
  through a connector that ends with a ReLU (connector_relu)."""
  config = _config('adain', adain=1.0, stat_mean=2.0)
  config.connector_relu = True
  loss, metrics, con, f_t, _, _, _ = _adain_parts(config)
  mu_s = np.asarray(con['stage3'], np.float64).mean(axis=(1, 2))
  mu_t = np.asarray(f_t['stage3'], np.float64).mean(axis=(1, 2))
  expected = np.mean(np.square(mu_s - mu_t))
  np.testing.assert_allclose(metrics['stat_mean'], expected, rtol=1e-5)
  np.testing.assert_allclose(
      loss, metrics['ce'] + metrics['adain'] + 2.0 * expected, rtol=1e-5)
  assert float(np.min(np.asarray(con['stage3']))) >= 0.0  # The ReLU.


def test_connector_relu_changes_the_output_not_the_parameters():
  """A ReLU after the BN: relu(the plain connector), same parameter tree."""
  from adain_kd_jax.methods import connectors
  x = jax.random.normal(jax.random.key(3), (4, 5, 5, 6))
  plain = connectors.Connector(8)
  relu = connectors.Connector(8, relu=True)
  variables = plain.init(jax.random.key(0), x, train=False)
  assert (jax.tree.structure(variables)
          == jax.tree.structure(relu.init(jax.random.key(0), x, train=False)))
  y = plain.apply(variables, x, train=False)
  np.testing.assert_array_equal(relu.apply(variables, x, train=False),
                                jax.nn.relu(y))
  assert float(jnp.min(y)) < 0.0  # So the ReLU did something.


def test_fitnet_is_the_hint_regressor_then_a_plain_mse():
  """L_fitnet = sum_k w_k mean((ConvReg_k(f_s) - f_t)^2), params['hint']."""
  from adain_kd_jax.losses import baselines as losses_baselines
  config = _config('fitnet')
  config.points, config.point_weights = (1, 2), (1.0, 0.5)
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  assert distiller.adapter('connector') is None
  variables = distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  assert set(variables['params']) == {'student', 'hint'}
  assert set(variables['params']['hint']) == {'stage1', 'stage2'}
  teacher_vars = make_teacher_variables()
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0
  _, (metrics, new_stats, _) = _loss(distiller, variables['params'],
                                     variables['batch_stats'], teacher_vars,
                                     images, batch['label'])
  assert set(new_stats) == {'student', 'hint'}
  _, f_s = _student_train(distiller, variables, images)
  h_out, _ = distiller.adapter('hint').apply(
      {'params': variables['params']['hint'],
       'batch_stats': variables['batch_stats']['hint']},
      f_s, train=True, mutable=['batch_stats'])
  _, f_t = distiller.teacher.apply(teacher_vars, images, train=False)
  expected = sum(
      w * np.mean(np.square(np.asarray(h_out[n]) - np.asarray(f_t[n])))
      for n, w in (('stage1', 1.0), ('stage2', 0.5)))
  np.testing.assert_allclose(metrics['fitnet'], expected, rtol=1e-5)
  assert float(
      losses_baselines.hint_mse(f_t['stage2'], f_t['stage2'])) == 0.0


@pytest.mark.parametrize('student,teacher,point,kernel', [
    ('resnet8', 'resnet8', 2, (1, 1, 32, 32)),  # equal sizes: 1x1 conv
    ('vgg8', 'resnet18', 1, (3, 3, 128, 64)),  # student twice: 3x3 stride 2
    ('MobileNetV2', 'ResNet50', 2, (4, 4, 512, 16)),  # half: 4x4 transposed
], ids=['equal', 'student_twice', 'student_half'])
def test_fitnet_regressor_maps_to_the_teacher_shape(student, teacher, point,
                                                    kernel):
  """The three ConvReg cases between zoo models; the loss traces."""
  shape = (28, 28, 1) if student == 'resnet8' else (32, 32, 3)
  config = _config('fitnet')
  config.update(model=student, teacher=teacher, points=(point,))
  d = objective.create(config, 10, shape)
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  variables = jax.eval_shape(d.init, jax.random.key(0), x)
  name = f'stage{point}'
  assert variables['params']['hint'][name]['conv']['kernel'].shape == kernel
  t_vars = objective.teacher_variables_struct(d, shape)
  loss, _ = jax.eval_shape(functools.partial(_loss, d), variables['params'],
                           variables['batch_stats'], t_vars, x,
                           jax.ShapeDtypeStruct((2,), jnp.int32))
  assert loss.shape == ()


def test_fitnet_without_a_regressor_names_the_stage():
  """resnet18 (1x1 at stage 4) under vgg8 (4x4): no ConvReg case."""
  config = _config('fitnet')
  config.update(model='resnet18', teacher='vgg8', points=(4,))
  with pytest.raises(ValueError, match='FitNet hint at stage4'):
    objective.create(config, 10, (32, 32, 3))


def test_multi_step_on_device_data_equals_single_steps():
  """3 steps in one scan, batches gathered on device == 3 host-fed steps."""
  parts = _build(_config('adain_kd'), steps.create_mesh())
  rng = np.random.default_rng(5)
  images = rng.integers(0, 256, (64, *IMAGE_SHAPE), dtype=np.uint8)
  idx = np.stack([rng.permutation(64)[:16] for _ in range(3)]).astype(np.int32)
  teacher_vars = make_teacher_variables()

  def fresh():
    return parts.init_state(jax.random.key(0))

  p_train_step = one_step(parts.multi_step)
  state = fresh()
  for i in range(3):
    state, last = p_train_step(state, teacher_vars, {
        'image': images[idx[i]], 'label': TRAIN_LABELS[idx[i]],
        'index': idx[i]})
  p_multi = parts.multi_step
  multi_state, metrics = p_multi(
      fresh(), teacher_vars,
      {'image': images, 'label': TRAIN_LABELS}, {'index': idx})
  # Gathering on the device is exactly feeding the same batches from the host.
  host_state, _ = p_multi(fresh(), teacher_vars, None, {
      'image': images[idx], 'label': TRAIN_LABELS[idx], 'index': idx})
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(host_state.params),
               jax.device_get(multi_state.params))
  assert metrics['loss'].shape == (3,)
  np.testing.assert_allclose(metrics['loss'][-1], last['loss'], rtol=1e-4)
  # Three steps in one scan vs three calls: XLA compiles them differently,
  # so round-off differs; wrong batches would differ by the updates (~1e-2).
  init = jax.device_get(fresh().params)
  single, multi = jax.device_get((state.params, multi_state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3,
                                                       atol=1e-4),
               single, multi)
  moved = max(float(np.abs(a - b).max()) for a, b in
              zip(jax.tree.leaves(single), jax.tree.leaves(init)))
  assert moved > 1e-3


def test_profiles_name_the_student_and_teacher_forwards():
  """The compiled objective carries jax.named_call's names: the student's
  forward, the teacher's and the teacher's tail (AdaIN) are named in it."""
  config = _config('adain')
  distiller = objective.create(config, 10, IMAGE_SHAPE)
  variables = distiller.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)))
  batch = _batch()
  images = batch['image'].astype(np.float32) / 255.0
  nondiff_vars = {'batch_stats': variables['batch_stats'], 'term_state': {},
                  'teacher': make_teacher_variables()}
  text = jax.jit(distiller.loss_fn).lower(
      variables['params'], nondiff_vars,
      {'image': images, 'label': batch['label']}, jax.random.key(0),
      0).as_text(debug_info=True)
  for name in ('student_forward', 'teacher_forward', 'teacher_tail'):
    assert name in text, name
