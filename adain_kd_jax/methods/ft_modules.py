"""FT's paraphraser and translator (params under params['ft_paraphraser']
and params['ft']).

As RepDistiller's `Paraphraser` and `Translator` (`models/util.py`), built
as `train_student.py` builds them on each network's last stage map
(`feat[-2]`, before pooling) with the rate k = 0.5: the factor has
int(k C_t) channels, C_t the teacher's.
  * `Paraphraser` (use_bn False), on the teacher's map: an encoder of three
    3x3 convolutions (C_t -> C_t -> k C_t -> k C_t) and a decoder of three
    3x3 transposed convolutions (k C_t -> k C_t -> C_t -> C_t), stride 1,
    padding 1, each followed by (BatchNorm if use_bn, then) LeakyReLU(0.1).
    It returns (factor, reconstruction); the first phase trains it alone on
    the reconstruction, the main phase reads its factor.
  * `Translator` (use_bn True), on the student's map: the same encoder from
    the student's C_s channels (C_s -> C_s -> k C_t -> k C_t), each
    convolution followed by BatchNorm and LeakyReLU(0.1); trained with the
    student.
Every (transposed) convolution has a bias and PyTorch's default
initialisation, U(+-1 / sqrt(fan_in)) for kernel and bias, fan_in = 9 x
the weight's dimension 1 (the input channels of a convolution, the output
channels of a transposed one). The `FT` term (`feature_terms.py`) declares
them with `ParaphraserAdapter` and `TranslatorAdapter`.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from adain_kd_jax.methods import base
from adain_kd_jax.methods.relational_terms import last_stage

# RepDistiller's default rate k of `Paraphraser` and `Translator`, the one
# `train_student.py` uses: the factor has int(k C_t) channels.
FT_RATE = 0.5
LEAKY_SLOPE = 0.1  # nn.LeakyReLU(0.1).

# PyTorch's default (transposed) conv kernel init, U(+-1 / sqrt(fan_in))
# (kaiming_uniform_ with a = sqrt(5)): variance 1 / (3 fan_in). flax's
# fan_in (axis -2 of the kernel) is torch's for both layouts used here.
_TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                      'uniform')


def _torch_bias_init(fan_in: int):
  """PyTorch's default bias init, U(+-1 / sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def factor_channels(teacher_channels: int, rate: float = FT_RATE) -> int:
  """int(rate C_t), as RepDistiller's `int(t_shape[1] * k)`."""
  return int(teacher_channels * rate)


class _Stack(nn.Module):
  """Three 3x3 (transposed) convolutions, stride 1, padding 1, each then
  BatchNorm (if `use_bn`) and LeakyReLU(0.1).

  Attributes:
    widths: the three output channel counts.
    transpose: torch's `ConvTranspose2d` instead of `Conv2d`.
    use_bn: BatchNorm after each convolution (torch's momentum 0.1).
    dtype: computation dtype.
  """
  widths: tuple[int, int, int]
  transpose: bool = False
  use_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    for i, width in enumerate(self.widths):
      c_in = x.shape[-1]
      fan_in = 9 * (width if self.transpose else c_in)
      if self.transpose:
        # torch's ConvTranspose2d(k 3, stride 1, padding 1): its weight
        # (C_in, C_out, 3, 3) is flax's transposed kernel (3, 3, C_out, C_in).
        x = nn.ConvTranspose(width, (3, 3), padding=((1, 1), (1, 1)),
                             transpose_kernel=True, dtype=self.dtype,
                             kernel_init=_TORCH_KERNEL_INIT,
                             bias_init=_torch_bias_init(fan_in),
                             name=f'conv{i}')(x)
      else:
        x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)),
                    dtype=self.dtype, kernel_init=_TORCH_KERNEL_INIT,
                    bias_init=_torch_bias_init(fan_in), name=f'conv{i}')(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         epsilon=1e-5, dtype=self.dtype, name=f'bn{i}')(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    return x


class Paraphraser(nn.Module):
  """RepDistiller's `Paraphraser(t_shape, k, use_bn)` on (N, H, W, C_t).

  Attributes:
    channels: the teacher map's C_t.
    rate: k; the factor has int(k C_t) channels.
    use_bn: BatchNorm after each layer (RepDistiller's default False).
    dtype: computation dtype.
  """
  channels: int
  rate: float = FT_RATE
  use_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_t_NHWC, *, train: bool = False):
    """Returns (factor_NHWK, reconstruction_NHWC), K = int(k C_t)."""
    c, k = self.channels, factor_channels(self.channels, self.rate)
    factor = _Stack((c, k, k), use_bn=self.use_bn, dtype=self.dtype,
                    name='encoder')(f_t_NHWC, train=train)
    rec = _Stack((k, c, c), transpose=True, use_bn=self.use_bn,
                 dtype=self.dtype, name='decoder')(factor, train=train)
    return factor, rec


class Translator(nn.Module):
  """RepDistiller's `Translator(s_shape, t_shape, k, use_bn)` on the
  student's (N, H, W, C_s).

  Attributes:
    teacher_channels: C_t; the factor has int(k C_t) channels.
    rate: k.
    use_bn: BatchNorm after each layer (RepDistiller's default True).
    dtype: computation dtype.
  """
  teacher_channels: int
  rate: float = FT_RATE
  use_bn: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f_s_NHWC, *, train: bool):
    """Returns the student's factor (N, H, W, int(k C_t))."""
    k = factor_channels(self.teacher_channels, self.rate)
    return _Stack((f_s_NHWC.shape[-1], k, k), use_bn=self.use_bn,
                  dtype=self.dtype, name='encoder')(f_s_NHWC, train=train)


def _teacher_channels(shapes: base.Shapes) -> int:
  """C_t of the teacher's last stage map; ValueError without a teacher."""
  if shapes.teacher is None:
    raise ValueError('FT builds its paraphraser on the teacher\'s last '
                     'stage map: set config.teacher.')
  channels = int(shapes.teacher[last_stage(shapes.teacher)].shape[-1])
  if factor_channels(channels) < 1:
    raise ValueError(f'FT: the teacher\'s last stage has {channels} '
                     f'channel(s), fewer than 1 / {FT_RATE} for a factor; '
                     'use another teacher or method.')
  return channels


@dataclasses.dataclass(frozen=True)
class ParaphraserAdapter(base.Adapter):
  """FT's paraphraser on the teacher's last stage map (no BatchNorm, as
  RepDistiller builds it); output (factor, reconstruction)."""
  key = 'ft_paraphraser'
  init_stream = 12
  batch_norm = False

  def build(self, config, shapes):
    del config
    return Paraphraser(channels=_teacher_channels(shapes), use_bn=False,
                       dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    del feats_s
    return (feats_t[last_stage(feats_t)],)


@dataclasses.dataclass(frozen=True)
class TranslatorAdapter(base.Adapter):
  """FT's translator on the student's last stage map, to int(k C_t)
  channels; output the student's factor."""
  key = 'ft'
  init_stream = 13

  def build(self, config, shapes):
    del config
    return Translator(teacher_channels=_teacher_channels(shapes),
                      use_bn=True, dtype=shapes.dtype)

  def inputs(self, feats_s, feats_t):
    del feats_t
    return (feats_s[last_stage(feats_s)],)
