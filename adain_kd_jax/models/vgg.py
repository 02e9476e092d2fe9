"""VGG with BatchNorm and without the fully connected block, NHWC.

Layer for layer the `models/vgg.py` zoo of the CIFAR-100 knowledge distillation
benchmark (RepDistiller, Tian et al., "Contrastive Representation
Distillation", ICLR 2020), whose registry names vgg8 ... vgg19 are the `_bn`
variants: five blocks of conv3x3(bias)-BN-ReLU layers, 2x2 max-pools between
blocks 0-1, 1-2 and 2-3, a global mean and one Linear(512, num_classes).

Stages (S = 4) are the benchmark's feature points f0..f4: 'stem' is block 0,
'stage{s}' is block s after the max-pool that precedes it (the pool belongs to
the stage it feeds), and 'pre_logits' the pooled vector.

Parameter names, PyTorch state dict -> Flax (j counts the convs of a block):
  block0.{3j}, block0.{3j+1}   -> stem_conv{j}, stem_bn{j}
  block{s}.{3j}, block{s}.{3j+1} -> stage{s}_conv{j}, stage{s}_bn{j}
  classifier                   -> fc
"""

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.models import layers


def _max_pool(h):
  return nn.max_pool(h, (2, 2), strides=(2, 2))


class VGG(layers.StagedNetwork):
  """VGG-BN of five conv blocks.

  Attributes:
    cfg: output channels of each conv, one tuple per block (5 blocks).
    num_classes: number of output logits.
    pool_before_stage4: RepDistiller applies its `pool3` (before block 4) only
      to 64-pixel-high input (its Tiny-ImageNet setting), not to CIFAR's 32.
      `tail` cannot see the input size, so the choice is this attribute: False
      reproduces the 32x32 model, True the 64x64 one.
    dtype: computation dtype; parameters stay float32.
  """
  cfg: Sequence[Sequence[int]]
  num_classes: int
  pool_before_stage4: bool = False
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 4

  def setup(self):
    if len(self.cfg) != self.num_stages + 1:
      raise ValueError(
          f'cfg needs {self.num_stages + 1} blocks, got {len(self.cfg)}.')
    for s, widths in enumerate(self.cfg):
      prefix = 'stem' if s == 0 else f'stage{s}'
      for j, width in enumerate(widths):
        # Systematic names (stem_conv0, stage1_bn0, ...) for checkpoint import.
        # VGG's convolutions keep their bias although a BN follows.
        setattr(self, f'{prefix}_conv{j}',
                layers.conv(width, 3, 1, self.dtype, use_bias=True))
        setattr(self, f'{prefix}_bn{j}', layers.batch_norm(self.dtype))
    # The zoo's classifier init: normal(0, 0.01), zero bias.
    self.fc = layers.dense(self.num_classes, self.dtype,
                           kernel_init=layers.classifier_normal_init)

  def _block(self, s: int, h, train: bool):
    """(the block's output, its last BN's output before the ReLU)."""
    prefix = 'stem' if s == 0 else f'stage{s}'
    for j in range(len(self.cfg[s])):
      h = getattr(self, f'{prefix}_conv{j}')(h)
      preact = getattr(self, f'{prefix}_bn{j}')(
          h, use_running_average=not train)
      h = nn.relu(preact)
    return h, preact

  def _stem(self, x, train: bool):
    return self._block(0, x, train)[0]

  def _stage_preact(self, s: int, h, train: bool):
    if s < self.num_stages or self.pool_before_stage4:
      h = _max_pool(h)
    return self._block(s, h, train)

  def _stage(self, s: int, h, train: bool):
    return self._stage_preact(s, h, train)[0]

  def preact_bn_path(self, s: int) -> tuple[str, ...]:
    return (f'stage{s}_bn{len(self.cfg[s]) - 1}',)


_CFGS = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    16: ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
         (512, 512, 512)),
    19: ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512),
         (512, 512, 512, 512)),
}

vgg8 = functools.partial(VGG, cfg=_CFGS[8])
vgg11 = functools.partial(VGG, cfg=_CFGS[11])
vgg13 = functools.partial(VGG, cfg=_CFGS[13])
vgg16 = functools.partial(VGG, cfg=_CFGS[16])
vgg19 = functools.partial(VGG, cfg=_CFGS[19])
