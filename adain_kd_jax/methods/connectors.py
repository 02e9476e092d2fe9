"""Student -> teacher adapters, trained with the student, dropped at deployment.

- `Connector` (the connector `r` of docs/method.md, section "The
  connector"): a 1x1 convolution to the teacher's channel count followed by
  BatchNorm (optionally a ReLU after it), for the AdaIN, `fm` and
  `stat_mean` terms of adain and adain_kd, and for stat_l2. Spatial sizes
  are left alone: AdaIN moves only statistics.
- `HintRegressor`: FitNet's hint regressor as in the CRD benchmark
  (RepDistiller `models/util.py` `ConvReg`, also mdistiller's), which maps
  the student's map onto the teacher's channels *and* spatial size, for the
  `fitnet` method.

Terms ask for them by declaration (`methods.base.Adapter`):
`ConnectorAdapter` (params / batch_stats['connector']) and `HintAdapter`
(params / batch_stats['hint']), with their outputs in
`Outputs.adapted['connector' | 'hint']['stage<k>']`.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax.methods import base


class Connector(nn.Module):
  """1x1 conv (no bias) + BatchNorm (+ ReLU if `relu`), to `features`
  channels. The ReLU is the authors' released connector; it has no
  parameters, so a checkpoint's layout does not depend on it."""
  features: int
  dtype: Any = jnp.float32
  relu: bool = False

  @nn.compact
  def __call__(self, x_NHWC, *, train: bool):
    x = nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                kernel_init=nn.initializers.variance_scaling(
                    2.0, 'fan_out', 'normal'),
                name='conv')(x_NHWC)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x


class Connectors(nn.Module):
  """One connector per named feature point.

  Attributes:
    channels: ((feature_name, teacher_channels), ...), e.g. (('stage2', 32),).
    relu: end each connector with a ReLU (config.connector_relu).
  """
  channels: tuple[tuple[str, int], ...]
  dtype: Any = jnp.float32
  relu: bool = False

  @nn.compact
  def __call__(self, features: dict[str, Any], *, train: bool):
    return {name: Connector(c, dtype=self.dtype, relu=self.relu, name=name)(
        features[name], train=train) for name, c in self.channels}


def hint_layout(stage: str, s_hw: tuple[int, int],
                t_hw: tuple[int, int]) -> tuple[str, tuple[int, int],
                                                 tuple[int, int], int]:
  """The convolution `ConvReg` (RepDistiller) picks for these map sizes.

  Decided on the heights, in ConvReg's order:
    - s_H == 2 t_H: 3x3 conv, stride 2, padding 1 (halves the map);
    - 2 s_H == t_H: 4x4 transposed conv, stride 2, padding 1 (doubles it);
    - s_H >= t_H: conv with kernel (1 + s_H - t_H, 1 + s_W - t_W), no
      padding (1x1 when the sizes are equal).

  Args:
    stage: the feature point's name, for the error message.
    s_hw: the student map's (H, W).
    t_hw: the teacher map's (H, W).

  Returns:
    (kind, kernel_size, strides, padding): kind 'conv' or 'transpose';
    padding as in PyTorch (pixels on each side of the input).

  Raises:
    ValueError: for a student map smaller than the teacher's but not half of
      it (ConvReg has no regressor for that).
  """
  (s_h, s_w), (t_h, t_w) = s_hw, t_hw
  if s_h == 2 * t_h:
    return 'conv', (3, 3), (2, 2), 1
  if s_h * 2 == t_h:
    return 'transpose', (4, 4), (2, 2), 1
  if s_h >= t_h:
    return 'conv', (1 + s_h - t_h, 1 + s_w - t_w), (1, 1), 0
  raise ValueError(
      f'FitNet hint at {stage}: the student map is {s_h}x{s_w}, the '
      f'teacher map {t_h}x{t_w}; the hint regressor (RepDistiller ConvReg) '
      'maps a student map of twice, half or at least the teacher\'s height '
      'only. Use another stage in config.points.')


def _torch_default_init(fan_in: int):
  """PyTorch's default conv weight and bias init: U(+-1 / sqrt(fan_in)).

  (`kaiming_uniform_(a=sqrt(5))` for the weight, the same bound for the
  bias.) ConvReg leaves its convolution at this default.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class HintRegressor(nn.Module):
  """FitNet's hint regressor: RepDistiller's `ConvReg`, NHWC.

  A convolution chosen by `hint_layout` (with bias, as ConvReg's
  `nn.Conv2d` / `nn.ConvTranspose2d`, PyTorch's default initialisation), then
  BatchNorm and ReLU, from the student's map to the teacher's channels and
  spatial size.

  Attributes:
    features: the teacher's channel count.
    teacher_hw: the teacher map's (H, W).
    dtype: computation dtype.
    relu: end with the ReLU (ConvReg's `use_relu`; AB's connectors have
      none).
  """
  features: int
  teacher_hw: tuple[int, int]
  dtype: Any = jnp.float32
  relu: bool = True

  @nn.compact
  def __call__(self, x_NHWC, *, train: bool):
    kind, kernel, strides, pad = hint_layout(
        self.name or 'the hint point', tuple(x_NHWC.shape[1:3]),
        tuple(self.teacher_hw))
    if kind == 'conv':
      fan_in = x_NHWC.shape[-1] * kernel[0] * kernel[1]
      init = _torch_default_init(fan_in)
      x = nn.Conv(self.features, kernel, strides=strides,
                  padding=((pad, pad), (pad, pad)), use_bias=True,
                  dtype=self.dtype, kernel_init=init, bias_init=init,
                  name='conv')(x_NHWC)
    else:
      # PyTorch's padding p of a transposed conv is lax.conv_transpose's
      # k - 1 - p on the (dilated) input: output (H - 1) * 2 - 2 + 4 = 2 H.
      # transpose_kernel=True: the gradient of a conv, as PyTorch's. Its
      # default init takes fan_in from the weight's dim 1 (the output
      # channels here).
      init = _torch_default_init(self.features * kernel[0] * kernel[1])
      lax_pad = tuple((k - 1 - pad, k - 1 - pad) for k in kernel)
      x = nn.ConvTranspose(self.features, kernel, strides=strides,
                           padding=lax_pad, use_bias=True,
                           transpose_kernel=True, dtype=self.dtype,
                           kernel_init=init, bias_init=init,
                           name='conv')(x_NHWC)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype, name='bn')(x)
    return nn.relu(x) if self.relu else x


class HintRegressors(nn.Module):
  """One hint regressor per named feature point (the `fitnet` method).

  Attributes:
    shapes: ((feature_name, teacher_channels, teacher_H, teacher_W), ...),
      e.g. (('stage2', 64, 16, 16),).
  """
  shapes: tuple[tuple[str, int, int, int], ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: dict[str, Any], *, train: bool):
    return {name: HintRegressor(c, (h, w), dtype=self.dtype, name=name)(
        features[name], train=train) for name, c, h, w in self.shapes}


@dataclasses.dataclass(frozen=True)
class ConnectorAdapter(base.Adapter):
  """Connectors at `stages`, to the teacher's channels (a ReLU at the end
  when config.connector_relu)."""
  key = 'connector'
  init_stream = 1

  def build(self, config, shapes):
    return Connectors(
        channels=tuple((f'stage{k}', shapes.teacher[f'stage{k}'].shape[-1])
                       for k in self.stages), dtype=shapes.dtype,
        relu=bool(config.connector_relu))


@dataclasses.dataclass(frozen=True)
class HintAdapter(base.Adapter):
  """FitNet's hint regressors at `stages`, to the teacher's shape.

  `build` raises ValueError naming the stage where no regressor maps the
  student's map to the teacher's shape. Shares the connectors' init key: no
  method has both.
  """
  key = 'hint'
  init_stream = 1

  def build(self, config, shapes):
    del config
    s_feats, t_feats = shapes.student, shapes.teacher
    names = [f'stage{k}' for k in self.stages]
    layout = []
    for name in names:  # ConvReg's cases, or an error naming the stage.
      hint_layout(name, s_feats[name].shape[1:3], t_feats[name].shape[1:3])
      _, t_h, t_w, t_c = t_feats[name].shape
      layout.append((name, int(t_c), int(t_h), int(t_w)))
    hints = HintRegressors(shapes=tuple(layout), dtype=shapes.dtype)
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
