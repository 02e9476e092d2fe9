"""Augmentation and normalisation on the device: pure JAX, jit-able.

What the jitted steps (`steps.py`) do to a host batch of uint8 images:
random crop and flip of the raw pixels, then normalisation, in the order of
torchvision's `RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(),
Normalize()`, so that the zero padding is black pixels, as in the PyTorch
recipes we compare to. (ImageNet's random-resized crop runs on the host,
`imagenet_decode`; its steps only normalise.)
"""

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Floats = Union[float, Sequence[float], np.ndarray, jax.Array]


def normalize(images: jax.Array, mean: Floats, std: Floats) -> jax.Array:
  """(images / 255 - mean) / std, in float32; mean and std per channel."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (jnp.asarray(images, jnp.float32) / 255.0 - mean) / std


def augment(images: jax.Array, rng: jax.Array, *, crop_padding: int,
            flip: bool) -> jax.Array:
  """Per-example random crop (of the zero-padded image) and horizontal flip.

  Args:
    images: [N, H, W, C], any dtype (pixel values or normalised floats; the
      padding is zeros in whichever units `images` are in).
    rng: a JAX random key.
    crop_padding: pixels of zero padding on each side before cropping back
      to H x W (torchvision's `RandomCrop(size, padding)`); 0 disables.
      A static Python int.
    flip: flip each image left-right with probability 0.5. Static.

  Returns:
    [N, H, W, C], same dtype. With crop_padding=0 and flip=False, `images`.
  """
  if crop_padding < 0:
    raise ValueError(f'crop_padding must be >= 0, got {crop_padding}.')
  if not crop_padding and not flip:
    return images
  n, h, w, c = images.shape
  p = crop_padding
  if p:
    images = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))

  def one(image, key):
    crop_key, flip_key = jax.random.split(key)
    if p:
      # Offsets 0..2p inclusive: every placement of the window, as
      # torchvision draws them.
      dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * p + 1)
      image = jax.lax.dynamic_slice(image, (dy, dx, 0), (h, w, c))
    if flip:
      image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1, :],
                        image)
    return image

  return jax.vmap(one)(images, jax.random.split(rng, n))


def preprocess_train(images: jax.Array, rng: jax.Array, *, mean: Floats,
                     std: Floats, crop_padding: int, flip: bool) -> jax.Array:
  """Training input: crop/flip the raw uint8 images, then normalise.

  Padding in pixel space pads with black (0), as torchvision does before
  `Normalize`; padding after normalising would pad with the mean colour (0 in
  normalised units) instead.

  Args:
    images: [N, H, W, C] uint8.
    rng: a JAX random key.
    mean: per-channel mean in [0, 1] units.
    std: per-channel std in [0, 1] units.
    crop_padding: see `augment` (static).
    flip: see `augment` (static).

  Returns:
    [N, H, W, C] float32.
  """
  images = augment(images, rng, crop_padding=crop_padding, flip=flip)
  return normalize(images, mean, std)


def preprocess_eval(images: jax.Array, *, mean: Floats,
                    std: Floats) -> jax.Array:
  """Evaluation input: normalisation only. [N, H, W, C] uint8 -> float32."""
  return normalize(images, mean, std)
