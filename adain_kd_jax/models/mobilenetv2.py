"""MobileNetV2 for 32x32 input, NHWC.

Layer for layer the `models/mobilenetv2.py` zoo of the CIFAR-100 knowledge
distillation benchmark (RepDistiller, Tian et al., "Contrastive Representation
Distillation", ICLR 2020); its registry name `MobileNetV2` is `mobile_half`:
expansion 6, width 0.5. A stride-2 conv3x3-BN-ReLU stem, seven groups of
inverted residuals (the first with expansion 1, but still with its 1x1 expand
conv as in the zoo), a conv1x1-BN-ReLU to 1280 channels, a global mean (the
zoo's AvgPool2d over the whole 2x2 map of a 32x32 input) and the classifier.

Stages (S = 4) are the benchmark's feature points f0..f4: 'stem' is `conv1`;
'stage1' ends after group 1, 'stage2' after group 2, 'stage3' after group 4
and 'stage4' after group 6; 'pre_logits' is the pooled 1280-vector.

Parameter names, PyTorch state dict -> Flax. Block b of a stage counts the
inverted residuals of its groups in order:
  conv1.0, conv1.1             -> stem_conv, stem_bn
  blocks.0.0, blocks.1.{0,1}   -> stage1_block{0, 1, 2}
  blocks.2.{0,1,2}             -> stage2_block{0, 1, 2}
  blocks.3.{0..3}, blocks.4.{0..2} -> stage3_block{0..3}, stage3_block{4..6}
  blocks.5.{0..2}, blocks.6.0  -> stage4_block{0..2}, stage4_block3
  (in a block) conv.{0,1,3,4,6,7} -> conv1, bn1, conv2, bn2, conv3, bn3
  conv2.0, conv2.1             -> head_conv, head_bn
  classifier.0                 -> fc
"""

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.models import layers

# (expansion, channels, blocks, stride) of the inverted residual groups, with
# the expansion None for the model's `expand_ratio`.
_GROUPS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# The groups that make up each stage.
_STAGE_GROUPS = ((0, 1), (2,), (3, 4), (5, 6))


class InvertedResidual(nn.Module):
  """conv1x1-BN-ReLU, depthwise conv3x3(stride)-BN-ReLU, conv1x1-BN (+ x)."""
  features: int
  stride: int
  expand_ratio: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    hidden = x.shape[-1] * self.expand_ratio
    y = layers.conv(hidden, 1, 1, self.dtype, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = layers.conv(hidden, 3, self.stride, self.dtype, groups=hidden,
                    name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = layers.conv(self.features, 1, 1, self.dtype, name='conv3')(y)
    y = norm(name='bn3')(y)
    if self.stride == 1 and x.shape[-1] == self.features:
      return x + y
    return y


class MobileNetV2(layers.StagedNetwork):
  """MobileNetV2 with the benchmark's four feature stages.

  Attributes:
    num_classes: number of output logits.
    expand_ratio: expansion of the inverted residuals after the first group.
    width_mult: channel multiplier (not of the 1280-channel head unless > 1).
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  expand_ratio: int = 6
  width_mult: float = 0.5
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 4

  def _block_specs(self, s: int):
    """(features, stride, expansion) of each block of stage s, in order."""
    specs = []
    for g in _STAGE_GROUPS[s - 1]:
      t, c, n, stride = _GROUPS[g]
      for i in range(n):
        specs.append((int(c * self.width_mult), stride if i == 0 else 1,
                      self.expand_ratio if t is None else t))
    return specs

  def setup(self):
    self.stem_conv = layers.conv(int(32 * self.width_mult), 3, 2, self.dtype)
    self.stem_bn = layers.batch_norm(self.dtype)
    for s in range(1, self.num_stages + 1):
      for b, (features, stride, t) in enumerate(self._block_specs(s)):
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}',
                InvertedResidual(features, stride, t, self.dtype))
    last = int(1280 * self.width_mult) if self.width_mult > 1 else 1280
    self.head_conv = layers.conv(last, 1, 1, self.dtype)
    self.head_bn = layers.batch_norm(self.dtype)
    # The zoo's classifier init: normal(0, 0.01), zero bias.
    self.fc = layers.dense(self.num_classes, self.dtype,
                           kernel_init=layers.classifier_normal_init)

  def _blocks_in_stage(self, s: int) -> int:
    return len(self._block_specs(s))

  def _head(self, h, train: bool):
    # The 1x1 head conv-BN-ReLU to 1280 channels comes before the pooling.
    h = nn.relu(self.head_bn(self.head_conv(h), use_running_average=not train))
    return self._classify(h)


mobile_half = functools.partial(MobileNetV2, expand_ratio=6, width_mult=0.5)
