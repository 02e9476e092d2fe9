"""CIFAR ResNets (basic blocks), NHWC.

Layer for layer the `models/resnet.py` zoo of the CIFAR-100 knowledge
distillation benchmark (RepDistiller, Tian et al., "Contrastive Representation
Distillation", ICLR 2020): resnet8 ... resnet110 and the 4x wider resnet8x4 and
resnet32x4. Pooling is a mean over H and W, so any input size works.
"""

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

# Kaiming normal, fan_out, as in the PyTorch zoo.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default nn.Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_dense_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def _batch_norm(dtype: Any, **kwargs) -> nn.BatchNorm:
  # PyTorch defaults: its momentum 0.1 is Flax's 0.9. `use_running_average` is
  # given at call time.
  return nn.BatchNorm(
      momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
      **kwargs)


def _conv(features: int, kernel: int, stride: int, dtype: Any,
          **kwargs) -> nn.Conv:
  # Explicit symmetric padding matches PyTorch's padding=k//2 also for stride 2
  # (Flax's 'SAME' would pad only after).
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2,
      use_bias=False, kernel_init=_conv_init, dtype=dtype,
      param_dtype=jnp.float32, **kwargs)


class BasicBlock(nn.Module):
  """conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, then ReLU."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(
        _batch_norm, self.dtype, use_running_average=not train)
    y = _conv(self.features, 3, self.stride, self.dtype, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = _conv(self.features, 3, 1, self.dtype, name='conv2')(y)
    y = norm(name='bn2')(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      # PyTorch's `downsample`: 1x1 conv + BN.
      x = _conv(self.features, 1, self.stride, self.dtype,
                name='shortcut_conv')(x)
      x = norm(name='shortcut_bn')(x)
    return nn.relu(y + x)


class CifarResNet(nn.Module):
  """CIFAR ResNet of depth 6n+2 with n basic blocks in each of 3 stages.

  Attributes:
    depth: total depth, 6n+2.
    num_classes: number of output logits.
    filters: channels of the stem and of the 3 stages.
    dtype: computation dtype; parameters stay float32.
  """
  depth: int
  num_classes: int
  filters: Sequence[int] = (16, 16, 32, 64)
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 3

  def setup(self):
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f'depth must be 6n+2 with n >= 1, got {self.depth}.')
    if len(self.filters) != self.num_stages + 1:
      raise ValueError(
          f'filters needs {self.num_stages + 1} entries, got {self.filters}.')
    blocks_per_stage = (self.depth - 2) // 6
    self.stem_conv = _conv(self.filters[0], 3, 1, self.dtype)
    self.stem_bn = _batch_norm(self.dtype)
    for s in range(1, self.num_stages + 1):
      for b in range(blocks_per_stage):
        stride = 2 if s > 1 and b == 0 else 1
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}',
                BasicBlock(self.filters[s], stride, self.dtype))
    self.fc = nn.Dense(
        self.num_classes, kernel_init=_dense_init,
        bias_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=jnp.float32)

  def _stage(self, s: int, h, train: bool):
    for b in range((self.depth - 2) // 6):
      h = getattr(self, f'stage{s}_block{b}')(h, train=train)
    return h

  def _head(self, h):
    pre_logits = jnp.mean(h, axis=(1, 2))
    return self.fc(pre_logits).astype(jnp.float32), pre_logits

  def __call__(self, x, *, train: bool):
    """Returns (logits, features) for an NHWC batch."""
    h = self.stem_conv(x)
    h = nn.relu(self.stem_bn(h, use_running_average=not train))
    features = {'stem': h}
    for s in range(1, self.num_stages + 1):
      h = self._stage(s, h, train)
      features[f'stage{s}'] = h
    logits, features['pre_logits'] = self._head(h)
    return logits, features

  def tail(self, h, *, start: int, train: bool):
    """Runs stages start+1..S, pooling and the classifier on map `h`."""
    if not 0 <= start <= self.num_stages:
      raise ValueError(
          f'start must be in 0..{self.num_stages}, got {start}.')
    for s in range(start + 1, self.num_stages + 1):
      h = self._stage(s, h, train)
    return self._head(h)[0]


_WIDE = (32, 64, 128, 256)

resnet8 = functools.partial(CifarResNet, depth=8)
resnet14 = functools.partial(CifarResNet, depth=14)
resnet20 = functools.partial(CifarResNet, depth=20)
resnet32 = functools.partial(CifarResNet, depth=32)
resnet44 = functools.partial(CifarResNet, depth=44)
resnet56 = functools.partial(CifarResNet, depth=56)
resnet110 = functools.partial(CifarResNet, depth=110)
resnet8x4 = functools.partial(CifarResNet, depth=8, filters=_WIDE)
resnet32x4 = functools.partial(CifarResNet, depth=32, filters=_WIDE)
