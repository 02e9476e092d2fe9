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

from adain_kd_jax.models import layers


class PreActBlock(nn.Module):
  """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + shortcut (no final ReLU).

  With `preact=True` it returns (output, its first BN's output): the
  previous stage's map before its ReLU.
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, preact: bool = False):
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    x_bn = norm(name='bn1')(x)
    y = nn.relu(x_bn)
    if x.shape[-1] == self.features:
      shortcut = x
    else:
      # Channels change: the shortcut also sees the pre-activated input, as a
      # strided 1x1 conv without BN (PyTorch's `convShortcut`).
      shortcut = layers.conv(self.features, 1, self.stride, self.dtype,
                             name='shortcut_conv')(y)
    y = layers.conv(self.features, 3, self.stride, self.dtype, name='conv1')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = layers.conv(self.features, 3, 1, self.dtype, name='conv2')(y)
    return (y + shortcut, x_bn) if preact else y + shortcut


class WideResNet(layers.StagedNetwork):
  """WRN-depth-widen_factor with (depth-4)/6 blocks in each of 3 stages.

  The stem is a bare conv; the head is the final BN + ReLU (the blocks are
  pre-activation), pooling and the classifier.

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
    self.stem_conv = layers.conv(16, 3, 1, self.dtype)
    for s in range(1, self.num_stages + 1):
      for b in range(self._blocks_in_stage(s)):
        stride = 2 if s > 1 and b == 0 else 1
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}',
                PreActBlock(16 * 2**(s - 1) * self.widen_factor, stride,
                            self.dtype))
    self.head_bn = layers.batch_norm(self.dtype)
    self.fc = layers.dense(self.num_classes, self.dtype)

  def _stem(self, x, train: bool):
    del train  # No BN in the stem.
    return self.stem_conv(x)

  def _blocks_in_stage(self, s: int) -> int:
    del s  # Every stage has the same number of blocks.
    return (self.depth - 4) // 6

  def _head(self, h, train: bool):
    # Blocks are pre-activation, so the last stage's output still needs the
    # final BN + ReLU.
    h = nn.relu(self.head_bn(h, use_running_average=not train))
    return self._classify(h)

  def __call__(self, x, *, train: bool):
    """`StagedNetwork.__call__`, with the pre-ReLU features of mdistiller's
    WRN: stage s's map through the BN that pre-activates it (the next
    stage's first block's `bn1`, or the head's BN for the last stage),
    taken from the pass itself, so each BN runs once."""
    h = self._stem(x, train)
    features = {'stem': h}
    for s in range(1, self.num_stages + 1):
      for b in range(self._blocks_in_stage(s)):
        block = getattr(self, f'stage{s}_block{b}')
        if s > 1 and b == 0:
          h, features[f'preact_stage{s - 1}'] = block(h, train=train,
                                                      preact=True)
        else:
          h = block(h, train=train)
      features[f'stage{s}'] = h
    preact = self.head_bn(h, use_running_average=not train)
    features[f'preact_stage{self.num_stages}'] = preact
    logits, features['pre_logits'] = self._classify(nn.relu(preact))
    return logits, features

  def preact_bn_path(self, s: int) -> tuple[str, ...]:
    if s == self.num_stages:
      return ('head_bn',)
    return (f'stage{s + 1}_block0', 'bn1')


wrn_16_1 = functools.partial(WideResNet, depth=16, widen_factor=1)
wrn_16_2 = functools.partial(WideResNet, depth=16, widen_factor=2)
wrn_40_1 = functools.partial(WideResNet, depth=40, widen_factor=1)
wrn_40_2 = functools.partial(WideResNet, depth=40, widen_factor=2)
