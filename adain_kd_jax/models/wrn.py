"""Wide ResNets (pre-activation, no dropout), NHWC.

Layer for layer the `models/wrn.py` zoo of the CIFAR-100 knowledge distillation
benchmark (RepDistiller, Tian et al., "Contrastive Representation
Distillation", ICLR 2020): wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2. Pooling is a
mean over H and W, so any input size works.
"""

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

# normal(0, sqrt(2 / (k * k * out_channels))) in the PyTorch zoo.
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


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + shortcut (no final ReLU)."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(
        _batch_norm, self.dtype, use_running_average=not train)
    y = nn.relu(norm(name='bn1')(x))
    if x.shape[-1] == self.features:
      shortcut = x
    else:
      # Channels change: the shortcut also sees the pre-activated input, as a
      # strided 1x1 conv without BN (PyTorch's `convShortcut`).
      shortcut = _conv(self.features, 1, self.stride, self.dtype,
                       name='shortcut_conv')(y)
    y = _conv(self.features, 3, self.stride, self.dtype, name='conv1')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = _conv(self.features, 3, 1, self.dtype, name='conv2')(y)
    return y + shortcut


class WideResNet(nn.Module):
  """WRN-depth-widen_factor with (depth-4)/6 blocks in each of 3 stages.

  Attributes:
    depth: total depth, 6n+4.
    widen_factor: channel multiplier of the stages.
    num_classes: number of output logits.
    dtype: computation dtype; parameters stay float32.
  """
  depth: int
  widen_factor: int
  num_classes: int
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 3

  def setup(self):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'depth must be 6n+4 with n >= 1, got {self.depth}.')
    blocks_per_stage = (self.depth - 4) // 6
    self.stem_conv = _conv(16, 3, 1, self.dtype)
    for s in range(1, self.num_stages + 1):
      for b in range(blocks_per_stage):
        stride = 2 if s > 1 and b == 0 else 1
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}',
                PreActBlock(16 * 2**(s - 1) * self.widen_factor, stride,
                            self.dtype))
    self.head_bn = _batch_norm(self.dtype)
    self.fc = nn.Dense(
        self.num_classes, kernel_init=_dense_init,
        bias_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=jnp.float32)

  def _stage(self, s: int, h, train: bool):
    for b in range((self.depth - 4) // 6):
      h = getattr(self, f'stage{s}_block{b}')(h, train=train)
    return h

  def _head(self, h, train: bool):
    # Blocks are pre-activation, so the last stage's output still needs the
    # final BN + ReLU.
    h = nn.relu(self.head_bn(h, use_running_average=not train))
    pre_logits = jnp.mean(h, axis=(1, 2))
    return self.fc(pre_logits).astype(jnp.float32), pre_logits

  def __call__(self, x, *, train: bool):
    """Returns (logits, features) for an NHWC batch."""
    h = self.stem_conv(x)
    features = {'stem': h}
    for s in range(1, self.num_stages + 1):
      h = self._stage(s, h, train)
      features[f'stage{s}'] = h
    logits, features['pre_logits'] = self._head(h, train)
    return logits, features

  def tail(self, h, *, start: int, train: bool):
    """Runs stages start+1..S, the final BN + ReLU, pooling and the classifier
    on map `h`."""
    if not 0 <= start <= self.num_stages:
      raise ValueError(
          f'start must be in 0..{self.num_stages}, got {start}.')
    for s in range(start + 1, self.num_stages + 1):
      h = self._stage(s, h, train)
    return self._head(h, train)[0]


wrn_16_1 = functools.partial(WideResNet, depth=16, widen_factor=1)
wrn_16_2 = functools.partial(WideResNet, depth=16, widen_factor=2)
wrn_40_1 = functools.partial(WideResNet, depth=40, widen_factor=1)
wrn_40_2 = functools.partial(WideResNet, depth=40, widen_factor=2)
