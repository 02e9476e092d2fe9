"""Model registry: the CIFAR-100 KD benchmark (RepDistiller) teachers/students
and torchvision's ImageNet ResNets.

Every model maps an NHWC batch to `(logits, features)` and has a `tail` method
that finishes the forward pass from any stage's output; see `cifar_resnet` and
`wrn`. Names are case-sensitive: the CIFAR `ResNet50` (RepDistiller's
resnetv2) is not the ImageNet `resnet50`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax.models import cifar_resnet
from adain_kd_jax.models import imagenet_resnet
from adain_kd_jax.models import mobilenetv2
from adain_kd_jax.models import resnet_bottleneck
from adain_kd_jax.models import shufflenet
from adain_kd_jax.models import vgg
from adain_kd_jax.models import wrn

_MODELS: dict[str, Callable[..., nn.Module]] = {
    'resnet8': cifar_resnet.resnet8,
    'resnet14': cifar_resnet.resnet14,
    'resnet20': cifar_resnet.resnet20,
    'resnet32': cifar_resnet.resnet32,
    'resnet44': cifar_resnet.resnet44,
    'resnet56': cifar_resnet.resnet56,
    'resnet110': cifar_resnet.resnet110,
    'resnet8x4': cifar_resnet.resnet8x4,
    'resnet32x4': cifar_resnet.resnet32x4,
    'wrn_16_1': wrn.wrn_16_1,
    'wrn_16_2': wrn.wrn_16_2,
    'wrn_40_1': wrn.wrn_40_1,
    'wrn_40_2': wrn.wrn_40_2,
    'vgg8': vgg.vgg8,
    'vgg11': vgg.vgg11,
    'vgg13': vgg.vgg13,
    'vgg16': vgg.vgg16,
    'vgg19': vgg.vgg19,
    'MobileNetV2': mobilenetv2.mobile_half,
    'ShuffleV1': shufflenet.shuffle_v1,
    'ShuffleV2': shufflenet.shuffle_v2,
    'ResNet50': resnet_bottleneck.resnet50,
    # ImageNet (torchvision layouts).
    'resnet18': imagenet_resnet.resnet18,
    'resnet34': imagenet_resnet.resnet34,
    'resnet50': imagenet_resnet.resnet50,
}

MODEL_NAMES = tuple(sorted(_MODELS))
# Computation dtypes (config.dtype); parameters stay float32.
DTYPES = ('float32', 'bfloat16', 'float16')


def create_model(name: str, num_classes: int,
                 dtype: Any = jnp.float32) -> nn.Module:
  """Builds the named model.

  Args:
    name: one of `MODEL_NAMES`.
    num_classes: number of output logits, >= 1.
    dtype: computation dtype; parameters stay float32.

  Returns:
    An unbound Flax module.

  Raises:
    ValueError: for an unknown name or num_classes < 1.
  """
  if name not in _MODELS:
    raise ValueError(
        f"Unknown model {name!r}. Valid names: {', '.join(MODEL_NAMES)}")
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
  return _MODELS[name](num_classes=num_classes, dtype=dtype)
