"""Layers and the network skeleton shared by the model zoo, NHWC.

The zoo reproduces PyTorch models layer for layer, so its building blocks
carry PyTorch's conventions: BatchNorm with PyTorch's momentum and epsilon,
convolutions padded symmetrically as PyTorch pads them, and PyTorch's weight
initialisations. Parameters stay float32 whatever the computation dtype.

`StagedNetwork` is the common shape of every network: a stem, `num_stages`
stages and a head, with `__call__` returning the logits and each stage's
output, and `tail` finishing the forward pass from any stage's output. The
families whose stages end in a BatchNorm and a ReLU also return each stage's
map before that ReLU ('preact_stage<k>', OFD's features) and name that
BatchNorm (`preact_bn`, OFD's margin).
"""

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

# Kaiming normal, fan_out: normal(0, sqrt(2 / (k * k * out_channels))), the
# conv init of the PyTorch zoo and of torchvision.
kaiming_fan_out_init = nn.initializers.variance_scaling(
    2.0, 'fan_out', 'normal')
# PyTorch's default nn.Linear and nn.Conv2d weight init:
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in of one group for grouped convs).
torch_default_init = nn.initializers.variance_scaling(
    1 / 3, 'fan_in', 'uniform')
# The classifier init of some zoo models: normal(0, 0.01).
classifier_normal_init = nn.initializers.normal(0.01)


def batch_norm(dtype: Any, **kwargs) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults.

  PyTorch's momentum 0.1 is Flax's 0.9. `use_running_average` is given here
  in `kwargs` or at call time.

  Args:
    dtype: computation dtype.
    **kwargs: further `nn.BatchNorm` arguments, e.g. `name`.

  Returns:
    The unbound BatchNorm module.
  """
  return nn.BatchNorm(
      momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
      **kwargs)


def conv(features: int, kernel: int, stride: int, dtype: Any,
         groups: int = 1, *, use_bias: bool = False,
         kernel_init: Any = kaiming_fan_out_init, **kwargs) -> nn.Conv:
  """Square conv padded like PyTorch's padding=kernel // 2.

  Explicit symmetric padding matches PyTorch also for stride 2 (Flax's 'SAME'
  would pad only after).

  Args:
    features: output channels.
    kernel: kernel height and width.
    stride: stride along H and W.
    dtype: computation dtype.
    groups: feature groups (the input channels for a depthwise conv).
    use_bias: whether the conv has a (zero-initialised) bias.
    kernel_init: weight initialiser.
    **kwargs: further `nn.Conv` arguments, e.g. `name`.

  Returns:
    The unbound conv module.
  """
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=stride, padding=((pad, pad),) * 2,
      feature_group_count=groups, use_bias=use_bias, kernel_init=kernel_init,
      dtype=dtype, param_dtype=jnp.float32, **kwargs)


def dense(features: int, dtype: Any,
          kernel_init: Any = torch_default_init, **kwargs) -> nn.Dense:
  """Dense layer with a zero bias and, by default, PyTorch's weight init.

  Args:
    features: output features.
    dtype: computation dtype.
    kernel_init: weight initialiser.
    **kwargs: further `nn.Dense` arguments, e.g. `name`.

  Returns:
    The unbound dense module.
  """
  return nn.Dense(
      features, kernel_init=kernel_init, bias_init=nn.initializers.zeros,
      dtype=dtype, param_dtype=jnp.float32, **kwargs)


class StagedNetwork(nn.Module):
  """Base of the zoo's networks: a stem, `num_stages` stages and a head.

  A subclass sets the class attribute `num_stages` and creates its layers in
  `setup`. The default parts fit the common layout, else it overrides them:
    `_stem(x, train)`: conv-BN-ReLU with the submodules `stem_conv` and
      `stem_bn`.
    `_stage(s, h, train)`: the submodules `stage{s}_block{b}`, for b below
      `_blocks_in_stage(s)` (which a subclass using this default defines).
    `_head(h, train) -> (logits, pre_logits)`: `_classify`, a global mean and
      the submodule `fc`.
  A family with pre-ReLU features defines `_stage_preact(s, h, train) ->
  (h, preact)` and `preact_bn_path(s)`; the default for residual stages
  (`preact_blocks`) calls the stage's last block with `preact=True`, which
  returns its output and its sum before the final ReLU.
  """

  num_stages: ClassVar[int]
  # The blocks take `preact=` and name the BN before their sum in
  # `preact_bn_name` (OFD's `get_bn_before_relu`).
  preact_blocks: ClassVar[bool] = False
  # Why there is no BatchNorm to name before the pre-ReLU maps (OFD cannot
  # take its margin from this network), or '' when there is one.
  preact_bn_missing: ClassVar[str] = ''

  def _stem(self, x, train: bool):
    h = self.stem_conv(x)
    return nn.relu(self.stem_bn(h, use_running_average=not train))

  def _blocks_in_stage(self, s: int) -> int:
    raise NotImplementedError(
        f'{type(self).__name__} uses the default _stage but does not define '
        f'_blocks_in_stage (asked for stage {s}).')

  def _stage(self, s: int, h, train: bool):
    for b in range(self._blocks_in_stage(s)):
      h = getattr(self, f'stage{s}_block{b}')(h, train=train)
    return h

  def _stage_preact(self, s: int, h, train: bool):
    """(stage s's output, its map before the final ReLU, or None)."""
    if not self.preact_blocks:
      return self._stage(s, h, train), None
    last = self._blocks_in_stage(s) - 1
    for b in range(last):
      h = getattr(self, f'stage{s}_block{b}')(h, train=train)
    return getattr(self, f'stage{s}_block{last}')(h, train=train,
                                                  preact=True)

  def preact_bn_path(self, s: int) -> tuple[str, ...]:
    """The params path of the BatchNorm before stage s's final ReLU.

    mdistiller's `get_bn_before_relu`: OFD's margin is computed from its
    scale and bias. NotImplementedError for a family without pre-ReLU
    features.
    """
    if not self.preact_blocks:
      raise NotImplementedError(
          f'{type(self).__name__} has no pre-ReLU features.')
    if self.preact_bn_missing:
      raise NotImplementedError(self.preact_bn_missing)
    block = f'stage{s}_block{self._blocks_in_stage(s) - 1}'
    return (block, getattr(self, block).preact_bn_name)

  def preact_bn(self, s: int):
    """(scale_C, bias_C) of the BatchNorm at `preact_bn_path(s)` (apply with
    `method='preact_bn'`)."""
    params = self.variables['params']
    for key in self.preact_bn_path(s):
      params = params[key]
    return params['scale'], params['bias']

  def _classify(self, h):
    """Returns (logits, pre_logits): `fc` of the mean over H and W."""
    pre_logits = jnp.mean(h, axis=(1, 2))
    return self.classify(pre_logits), pre_logits

  def classify(self, pre_logits_NC):
    """The logits of a pooled vector through `fc` alone (apply with
    `method='classify'`): the teacher's classifier on another feature,
    SRRL's softmax regression."""
    return self.fc(pre_logits_NC).astype(jnp.float32)

  def _head(self, h, train: bool):
    del train  # Unused by the default head.
    return self._classify(h)

  def __call__(self, x, *, train: bool):
    """Returns (logits, features) for an NHWC batch.

    Args:
      x: NHWC input batch.
      train: whether BatchNorm uses (and updates) batch statistics.

    Returns:
      float32 logits and a dict of features: 'stem', 'stage1' ... 'stageS'
      (maps), 'pre_logits' (the pooled vector) and, for the families that
      have them, 'preact_stage1' ... 'preact_stageS' (each stage's map
      before its final ReLU).
    """
    h = self._stem(x, train)
    features = {'stem': h}
    for s in range(1, self.num_stages + 1):
      h, preact = self._stage_preact(s, h, train)
      features[f'stage{s}'] = h
      if preact is not None:
        features[f'preact_stage{s}'] = preact
    logits, features['pre_logits'] = self._head(h, train)
    return logits, features

  def tail(self, h, *, start: int, train: bool):
    """Runs stages start+1..S and the head on map `h`.

    Args:
      h: the 'stem' feature for start 0, else the 'stage{start}' feature.
      start: the stage `h` comes from, in 0..S.
      train: whether BatchNorm uses (and updates) batch statistics.

    Returns:
      The float32 logits.

    Raises:
      ValueError: for a start outside 0..S.
    """
    if not 0 <= start <= self.num_stages:
      raise ValueError(
          f'start must be in 0..{self.num_stages}, got {start}.')
    for s in range(start + 1, self.num_stages + 1):
      h = self._stage(s, h, train)
    return self._head(h, train)[0]
