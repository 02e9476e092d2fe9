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

from adain_kd_jax.models import layers


class BasicBlock(nn.Module):
  """conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, then ReLU.

  With `preact=True` it returns (output, the sum before the ReLU).
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  preact_bn_name: ClassVar[str] = 'bn2'

  @nn.compact
  def __call__(self, x, *, train: bool, preact: bool = False):
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    y = layers.conv(self.features, 3, self.stride, self.dtype, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = layers.conv(self.features, 3, 1, self.dtype, name='conv2')(y)
    y = norm(name='bn2')(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      # PyTorch's `downsample`: 1x1 conv + BN.
      x = layers.conv(self.features, 1, self.stride, self.dtype,
                      name='shortcut_conv')(x)
      x = norm(name='shortcut_bn')(x)
    return (nn.relu(y + x), y + x) if preact else nn.relu(y + x)


class CifarResNet(layers.StagedNetwork):
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
  preact_blocks: ClassVar[bool] = True

  def setup(self):
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f'depth must be 6n+2 with n >= 1, got {self.depth}.')
    if len(self.filters) != self.num_stages + 1:
      raise ValueError(
          f'filters needs {self.num_stages + 1} entries, got {self.filters}.')
    self.stem_conv = layers.conv(self.filters[0], 3, 1, self.dtype)
    self.stem_bn = layers.batch_norm(self.dtype)
    for s in range(1, self.num_stages + 1):
      for b in range(self._blocks_in_stage(s)):
        stride = 2 if s > 1 and b == 0 else 1
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}',
                BasicBlock(self.filters[s], stride, self.dtype))
    self.fc = layers.dense(self.num_classes, self.dtype)

  def _blocks_in_stage(self, s: int) -> int:
    del s  # Every stage has the same number of blocks.
    return (self.depth - 2) // 6


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
