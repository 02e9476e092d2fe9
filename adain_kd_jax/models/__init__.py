"""Model registry: the one list of the models, one `ModelInfo` row each.

The CIFAR-100 KD benchmark (RepDistiller) teachers/students and
torchvision's ImageNet ResNets. Every other list of model names is derived
from `MODELS` (`MODEL_NAMES`, `IMAGENET_MODELS`, the importable models of
`torch_import.key_maps`); the models with published PyTorch weights are a
subset of it.

Every model maps an NHWC batch to `(logits, features)` and has a `tail` method
that finishes the forward pass from any stage's output; see `layers`,
`cifar_resnet` and `wrn`. Names are case-sensitive: the CIFAR `ResNet50`
(RepDistiller's resnetv2) is not the ImageNet `resnet50`.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from adain_kd_jax import cli
from adain_kd_jax.models import cifar_resnet
from adain_kd_jax.models import imagenet_resnet
from adain_kd_jax.models import mobilenetv2
from adain_kd_jax.models import resnet_bottleneck
from adain_kd_jax.models import shufflenet
from adain_kd_jax.models import vgg
from adain_kd_jax.models import wrn


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """Static facts about one model.

  Attributes:
    build: the constructor, `build(num_classes=..., dtype=...)` -> module.
    family: the architecture family, which fixes the PyTorch layout of its
      parameter names; `torch_import.key_maps` maps the families that have
      PyTorch weights, and a model of any other family has none to import.
    imagenet: True for a model made for ImageNet (224x224 input, 1000
      classes); False for one made for CIFAR's 32x32 input.
  """
  build: Callable[..., nn.Module]
  family: str
  imagenet: bool = False


# The first row of a family is its smallest model (the tests' representative).
MODELS: dict[str, ModelInfo] = {
    'resnet8': ModelInfo(cifar_resnet.resnet8, 'cifar_resnet'),
    'resnet14': ModelInfo(cifar_resnet.resnet14, 'cifar_resnet'),
    'resnet20': ModelInfo(cifar_resnet.resnet20, 'cifar_resnet'),
    'resnet32': ModelInfo(cifar_resnet.resnet32, 'cifar_resnet'),
    'resnet44': ModelInfo(cifar_resnet.resnet44, 'cifar_resnet'),
    'resnet56': ModelInfo(cifar_resnet.resnet56, 'cifar_resnet'),
    'resnet110': ModelInfo(cifar_resnet.resnet110, 'cifar_resnet'),
    'resnet8x4': ModelInfo(cifar_resnet.resnet8x4, 'cifar_resnet'),
    'resnet32x4': ModelInfo(cifar_resnet.resnet32x4, 'cifar_resnet'),
    'wrn_16_1': ModelInfo(wrn.wrn_16_1, 'wrn'),
    'wrn_16_2': ModelInfo(wrn.wrn_16_2, 'wrn'),
    'wrn_40_1': ModelInfo(wrn.wrn_40_1, 'wrn'),
    'wrn_40_2': ModelInfo(wrn.wrn_40_2, 'wrn'),
    'vgg8': ModelInfo(vgg.vgg8, 'vgg'),
    'vgg11': ModelInfo(vgg.vgg11, 'vgg'),
    'vgg13': ModelInfo(vgg.vgg13, 'vgg'),
    'vgg16': ModelInfo(vgg.vgg16, 'vgg'),
    'vgg19': ModelInfo(vgg.vgg19, 'vgg'),
    'MobileNetV2': ModelInfo(mobilenetv2.mobile_half, 'mobilenetv2'),
    'ShuffleV1': ModelInfo(shufflenet.shuffle_v1, 'shufflev1'),
    'ShuffleV2': ModelInfo(shufflenet.shuffle_v2, 'shufflev2'),
    'ResNet50': ModelInfo(resnet_bottleneck.resnet50, 'resnetv2'),
    # ImageNet (torchvision layouts).
    'resnet18': ModelInfo(imagenet_resnet.resnet18, 'imagenet_resnet',
                          imagenet=True),
    'resnet34': ModelInfo(imagenet_resnet.resnet34, 'imagenet_resnet',
                          imagenet=True),
    'resnet50': ModelInfo(imagenet_resnet.resnet50, 'imagenet_resnet',
                          imagenet=True),
}

MODEL_NAMES = tuple(sorted(MODELS))
IMAGENET_MODELS = tuple(name for name in MODEL_NAMES if MODELS[name].imagenet)
# Computation dtypes (config.dtype); parameters stay float32.
DTYPES = ('float32', 'bfloat16', 'float16')


def get_info(name: str) -> ModelInfo:
  """Returns `MODELS[name]`, or a ValueError naming the valid names."""
  if name not in MODELS:
    raise ValueError(
        f"Unknown model {name!r}. Valid names: {', '.join(MODEL_NAMES)}."
        + cli.did_you_mean(name, MODEL_NAMES))
  return MODELS[name]


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
  info = get_info(name)
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
  return info.build(num_classes=num_classes, dtype=dtype)
