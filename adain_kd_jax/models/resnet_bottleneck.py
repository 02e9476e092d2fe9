"""ResNets of 4 stages (64-512 planes) with basic or bottleneck blocks, NHWC.

Layer for layer the `models/resnetv2.py` ResNet50 of the CIFAR-100 knowledge
distillation benchmark (RepDistiller, Tian et al., "Contrastive Representation
Distillation", ICLR 2020): a stride-1 conv3x3-BN-ReLU stem, 3/4/6/3 bottleneck
blocks (stride on the 3x3 conv), a global mean and the classifier. With
`imagenet_stem` the same class is torchvision's ImageNet ResNet (see
`imagenet_resnet`). Pooling is a mean over H and W, so any input size works.

Stages (S = 4) are the benchmark's feature points f0..f4: 'stem', then the
output of each `layer{s}`; 'pre_logits' is the pooled vector.

Parameter names, PyTorch state dict -> Flax:
  conv1, bn1                  -> stem_conv, stem_bn
  layer{s}.{b}                -> stage{s}_block{b}
  (in a block) conv{i}, bn{i} -> conv{i}, bn{i}
  (in a block) shortcut.0, shortcut.1 (torchvision: downsample.0, downsample.1)
                              -> shortcut_conv, shortcut_bn
  linear (torchvision: fc)    -> fc
"""

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.models import layers


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1(4x)-BN + shortcut, ReLU.

  Attributes:
    features: planes of the 1x1 and 3x3 convs; the block outputs 4x as many.
    stride: stride of the 3x3 conv and of the projection shortcut.
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  expansion: ClassVar[int] = 4
  preact_bn_name: ClassVar[str] = 'bn3'

  @nn.compact
  def __call__(self, x, *, train: bool, preact: bool = False):
    """The block's output; with `preact`, also its sum before the ReLU."""
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    out_features = self.expansion * self.features
    y = layers.conv(self.features, 1, 1, self.dtype, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = layers.conv(self.features, 3, self.stride, self.dtype, name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = layers.conv(out_features, 1, 1, self.dtype, name='conv3')(y)
    y = norm(name='bn3')(y)
    if self.stride != 1 or x.shape[-1] != out_features:
      # Projection shortcut: 1x1 conv + BN.
      x = layers.conv(out_features, 1, self.stride, self.dtype,
                      name='shortcut_conv')(x)
      x = norm(name='shortcut_bn')(x)
    return (nn.relu(y + x), y + x) if preact else nn.relu(y + x)


class ResNet(layers.StagedNetwork):
  """ResNet with stages of 64, 128, 256 and 512 planes.

  Attributes:
    block: block class, called as block(planes, stride, dtype) (`Bottleneck`
      or `cifar_resnet.BasicBlock`).
    stage_sizes: blocks in each of the 4 stages.
    num_classes: number of output logits.
    imagenet_stem: False for the CIFAR stem (conv3x3, stride 1), True for
      ImageNet's (conv7x7 stride 2, BN, ReLU, 3x3 max-pool stride 2; the
      'stem' feature is then the max-pool's output).
    dtype: computation dtype; parameters stay float32.
  """
  block: Any
  stage_sizes: Sequence[int]
  num_classes: int
  imagenet_stem: bool = False
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 4
  preact_blocks: ClassVar[bool] = True

  def setup(self):
    if len(self.stage_sizes) != self.num_stages:
      raise ValueError(f'stage_sizes needs {self.num_stages} entries, got '
                       f'{self.stage_sizes}.')
    if self.imagenet_stem:
      self.stem_conv = layers.conv(64, 7, 2, self.dtype)
    else:
      self.stem_conv = layers.conv(64, 3, 1, self.dtype)
    self.stem_bn = layers.batch_norm(self.dtype)
    for s in range(1, self.num_stages + 1):
      for b in range(self.stage_sizes[s - 1]):
        stride = 2 if s > 1 and b == 0 else 1
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}',
                self.block(64 * 2**(s - 1), stride, self.dtype))
    self.fc = layers.dense(self.num_classes, self.dtype)

  def _stem(self, x, train: bool):
    h = super()._stem(x, train)
    if self.imagenet_stem:
      h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return h

  def _blocks_in_stage(self, s: int) -> int:
    return self.stage_sizes[s - 1]


resnet50 = functools.partial(ResNet, block=Bottleneck, stage_sizes=(3, 4, 6, 3))
