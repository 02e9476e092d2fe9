"""ShuffleNet V1 and V2 for 32x32 input, NHWC.

Layer for layer the `models/ShuffleNetv1.py` and `models/ShuffleNetv2.py` zoo
of the CIFAR-100 knowledge distillation benchmark (RepDistiller, Tian et al.,
"Contrastive Representation Distillation", ICLR 2020): `ShuffleV1` (3 groups,
240/480/960 channels, 4/8/4 blocks) and `ShuffleV2` (net size 1: 116/232/464
channels, 3/7/3 blocks after each down-sampling block, a 1024-channel head
conv). Both have a stride-1 conv1x1-BN-ReLU stem to 24 channels, and the first
block of each stage halves H and W. Pooling is a mean over H and W (the zoo's
4x4 average pool of the 4x4 map of a 32x32 input), so any input size works.

Stages (S = 3) are the benchmark's feature points f0..f3 (its f4 is the pooled
vector): 'stem', then the output of each `layer{s}`; 'pre_logits' is the pooled
vector.

Parameter names, PyTorch state dict -> Flax (both versions):
  conv1, bn1                  -> stem_conv, stem_bn
  layer{s}.{b}                -> stage{s}_block{b} (V2: block 0 is the
                                 down-sampling block)
  (in a block) conv{i}, bn{i} -> conv{i}, bn{i}
  conv2, bn2 (V2 only)        -> head_conv, head_bn
  linear                      -> fc
"""

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.models import layers

# The zoo keeps PyTorch's default inits for conv (and linear) weights.
_conv = functools.partial(layers.conv, kernel_init=layers.torch_default_init)


def channel_shuffle(x, groups: int):
  """NHWC channel shuffle: channel g * (C / groups) + j moves to j * groups + g.

  The same permutation as PyTorch's view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)
  on NCHW.
  """
  *lead, c = x.shape
  return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(
      *lead, c)


# mdistiller's ShuffleNets have pre-ReLU maps (students of OFD) but raise for
# the BN before them: "not supported for 'Overhaul' teacher".
_NO_PREACT_BN = ('mdistiller\'s ShuffleNets name no BatchNorm before their '
                 'ReLUs (not supported as an OFD teacher)')


class ShuffleV1Block(nn.Module):
  """Grouped conv1x1-BN-ReLU, shuffle, depthwise conv3x3(stride)-BN-ReLU,
  grouped conv1x1-BN; + x, or concatenated with a 3x3 average pool of x for
  stride 2; then ReLU.

  Attributes:
    features: output channels of the residual branch (for stride 2 the block
      outputs these plus the input's channels).
    stride: 1 or 2.
    groups: groups of the last 1x1 conv and, unless `conv1_groups` is given,
      of the first.
    conv1_groups: groups of the first 1x1 conv and of the shuffle (the zoo
      uses 1 on the 24-channel stem).
    dtype: computation dtype; parameters stay float32.
  """
  features: int
  stride: int
  groups: int
  conv1_groups: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, preact: bool = False):
    """The block's output; with `preact`, also its map before the ReLU."""
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    g = self.groups if self.conv1_groups is None else self.conv1_groups
    mid = self.features // 4
    y = _conv(mid, 1, 1, self.dtype, groups=g, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = channel_shuffle(y, g)
    y = _conv(mid, 3, self.stride, self.dtype, groups=mid, name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = _conv(self.features, 1, 1, self.dtype, groups=self.groups,
              name='conv3')(y)
    y = norm(name='bn3')(y)
    if self.stride == 2:
      # PyTorch's AvgPool2d(3, 2, padding=1) counts the padding.
      shortcut = nn.avg_pool(x, (3, 3), strides=(2, 2),
                             padding=((1, 1), (1, 1)), count_include_pad=True)
      pre = jnp.concatenate([y, shortcut], axis=-1)
    else:
      pre = y + x
    return (nn.relu(pre), pre) if preact else nn.relu(pre)


class ShuffleV2DownBlock(nn.Module):
  """Two branches of stride 2 on the whole input, concatenated and shuffled.

  Left: depthwise conv3x3(2)-BN, conv1x1-BN-ReLU. Right: conv1x1-BN-ReLU,
  depthwise conv3x3(2)-BN, conv1x1-BN-ReLU. Each branch has features // 2
  output channels.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    c_in = x.shape[-1]
    mid = self.features // 2
    left = _conv(c_in, 3, 2, self.dtype, groups=c_in, name='conv1')(x)
    left = norm(name='bn1')(left)
    left = _conv(mid, 1, 1, self.dtype, name='conv2')(left)
    left = nn.relu(norm(name='bn2')(left))
    right = _conv(mid, 1, 1, self.dtype, name='conv3')(x)
    right = nn.relu(norm(name='bn3')(right))
    right = _conv(mid, 3, 2, self.dtype, groups=mid, name='conv4')(right)
    right = norm(name='bn4')(right)
    right = _conv(mid, 1, 1, self.dtype, name='conv5')(right)
    right = nn.relu(norm(name='bn5')(right))
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleV2Block(nn.Module):
  """Channel split; the second half goes through conv1x1-BN-ReLU, depthwise
  conv3x3-BN, conv1x1-BN-ReLU; concatenated after the first half, shuffled."""
  split_ratio: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, preact: bool = False):
    """The block's output; with `preact`, also mdistiller's `preact`: the
    first half and the branch before its ReLU, concatenated, unshuffled."""
    norm = functools.partial(
        layers.batch_norm, self.dtype, use_running_average=not train)
    c = int(x.shape[-1] * self.split_ratio)
    x1, x2 = x[..., :c], x[..., c:]
    y = _conv(c, 1, 1, self.dtype, name='conv1')(x2)
    y = nn.relu(norm(name='bn1')(y))
    y = _conv(c, 3, 1, self.dtype, groups=c, name='conv2')(y)
    y = norm(name='bn2')(y)
    y = _conv(c, 1, 1, self.dtype, name='conv3')(y)
    y_pre = norm(name='bn3')(y)
    out = channel_shuffle(jnp.concatenate([x1, nn.relu(y_pre)], axis=-1), 2)
    if preact:
      return out, jnp.concatenate([x1, y_pre], axis=-1)
    return out


class ShuffleNetV1(layers.StagedNetwork):
  """ShuffleNet V1 with 3 stages.

  Attributes:
    num_classes: number of output logits.
    out_planes: output channels of the 3 stages.
    num_blocks: blocks of the 3 stages.
    groups: groups of the 1x1 convs.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  out_planes: Sequence[int] = (240, 480, 960)
  num_blocks: Sequence[int] = (4, 8, 4)
  groups: int = 3
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 3
  preact_blocks: ClassVar[bool] = True
  preact_bn_missing: ClassVar[str] = _NO_PREACT_BN

  def setup(self):
    if len(self.out_planes) != self.num_stages or len(
        self.num_blocks) != self.num_stages:
      raise ValueError(
          f'out_planes and num_blocks need {self.num_stages} entries, got '
          f'{self.out_planes} and {self.num_blocks}.')
    self.stem_conv = _conv(24, 1, 1, self.dtype)
    self.stem_bn = layers.batch_norm(self.dtype)
    in_planes = 24
    for s in range(1, self.num_stages + 1):
      out_planes = self.out_planes[s - 1]
      for b in range(self.num_blocks[s - 1]):
        # The first block concatenates its input: its branch adds the rest.
        # Systematic names (stage1_block0, ...) for checkpoint import.
        setattr(self, f'stage{s}_block{b}', ShuffleV1Block(
            out_planes - in_planes if b == 0 else out_planes,
            stride=2 if b == 0 else 1, groups=self.groups,
            conv1_groups=1 if s == 1 and b == 0 else None, dtype=self.dtype))
        in_planes = out_planes
    self.fc = layers.dense(self.num_classes, self.dtype)

  def _blocks_in_stage(self, s: int) -> int:
    return self.num_blocks[s - 1]


class ShuffleNetV2(layers.StagedNetwork):
  """ShuffleNet V2 with 3 stages and a 1x1 head conv.

  Attributes:
    num_classes: number of output logits.
    out_channels: output channels of the 3 stages and of the head conv.
    num_blocks: blocks of the 3 stages after each one's down-sampling block.
    dtype: computation dtype; parameters stay float32.
  """
  num_classes: int
  out_channels: Sequence[int] = (116, 232, 464, 1024)
  num_blocks: Sequence[int] = (3, 7, 3)
  dtype: Any = jnp.float32

  num_stages: ClassVar[int] = 3
  preact_blocks: ClassVar[bool] = True
  preact_bn_missing: ClassVar[str] = _NO_PREACT_BN

  def setup(self):
    if len(self.out_channels) != self.num_stages + 1 or len(
        self.num_blocks) != self.num_stages:
      raise ValueError(
          f'out_channels needs {self.num_stages + 1} entries and num_blocks '
          f'{self.num_stages}, got {self.out_channels} and {self.num_blocks}.')
    self.stem_conv = _conv(24, 1, 1, self.dtype)
    self.stem_bn = layers.batch_norm(self.dtype)
    for s in range(1, self.num_stages + 1):
      # Systematic names (stage1_block0, ...) for checkpoint import.
      setattr(self, f'stage{s}_block0',
              ShuffleV2DownBlock(self.out_channels[s - 1], self.dtype))
      for b in range(1, self.num_blocks[s - 1] + 1):
        setattr(self, f'stage{s}_block{b}', ShuffleV2Block(dtype=self.dtype))
    self.head_conv = _conv(self.out_channels[-1], 1, 1, self.dtype)
    self.head_bn = layers.batch_norm(self.dtype)
    self.fc = layers.dense(self.num_classes, self.dtype)

  def _blocks_in_stage(self, s: int) -> int:
    return self.num_blocks[s - 1] + 1  # With the down-sampling block.

  def _head(self, h, train: bool):
    # The 1x1 head conv-BN-ReLU comes before the pooling.
    h = nn.relu(self.head_bn(self.head_conv(h), use_running_average=not train))
    return self._classify(h)


shuffle_v1 = functools.partial(ShuffleNetV1, out_planes=(240, 480, 960),
                               num_blocks=(4, 8, 4), groups=3)
shuffle_v2 = functools.partial(ShuffleNetV2,
                               out_channels=(116, 232, 464, 1024),
                               num_blocks=(3, 7, 3))
