"""ImageNet ResNets (torchvision layouts, v1.5), NHWC.

Layer for layer torchvision's `resnet18`, `resnet34` and `resnet50`: a conv7x7
stride-2 stem + BN + ReLU + 3x3 stride-2 max-pool, 4 stages of BasicBlocks
(2/2/2/2, 3/4/6/3) or Bottlenecks (3/4/6/3) with the stride on the 3x3 conv,
a global mean and `fc`. They are `resnet_bottleneck.ResNet` with
`imagenet_stem=True`; the blocks are `cifar_resnet.BasicBlock` and
`resnet_bottleneck.Bottleneck`. Pooling is a mean over H and W, so any input
size works (224x224 for ImageNet; smaller ones such as 64x64 too).

Stages (S = 4): 'stem' is the max-pool's output (56x56x64 for 224x224 input),
'stage{s}' the output of torchvision's `layer{s}`, 'pre_logits' the pooled
vector.

Parameter names, torchvision state dict -> Flax:
  conv1, bn1                         -> stem_conv, stem_bn
  layer{s}.{b}                       -> stage{s}_block{b}
  (in a block) conv{i}, bn{i}        -> conv{i}, bn{i}
  (in a block) downsample.0, downsample.1 -> shortcut_conv, shortcut_bn
  fc                                 -> fc
"""

import functools

from adain_kd_jax.models import cifar_resnet
from adain_kd_jax.models import resnet_bottleneck

_ResNet = functools.partial(resnet_bottleneck.ResNet, imagenet_stem=True)

resnet18 = functools.partial(_ResNet, block=cifar_resnet.BasicBlock,
                             stage_sizes=(2, 2, 2, 2))
resnet34 = functools.partial(_ResNet, block=cifar_resnet.BasicBlock,
                             stage_sizes=(3, 4, 6, 3))
resnet50 = functools.partial(_ResNet, block=resnet_bottleneck.Bottleneck,
                             stage_sizes=(3, 4, 6, 3))
