"""ImageNet preprocessing of one example: torchvision's recipe, on the host.

Training `RandomResizedCrop(224)` (bilinear, antialiased as PIL resizes) then
`RandomHorizontalFlip()`; evaluation `Resize(256)` then `CenterCrop(224)`.
Pure numpy / PIL, deterministic in its inputs: the training crop and flip
draw from the example's generator, `augment_rng(seed, epoch, position)`, so
an example's pixels do not depend on which process or thread makes them.
Normalisation is left to the device (`augment.preprocess_eval`).
"""

import io
import math
from typing import Sequence, Union

import numpy as np
from PIL import Image

# torchvision's RandomResizedCrop defaults.
SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)

# Last entropy word of the per-example augmentation seed. Non-zero: numpy's
# SeedSequence ignores trailing zeros ([s, e] and [s, e, 0] give the same
# stream), so a zero here could reproduce the epoch permutation's stream.
_AUGMENT_STREAM = 0x1A6E

ImageLike = Union[bytes, np.ndarray]  # encoded image, or decoded HWC uint8


def _to_pil(image: ImageLike) -> Image.Image:
  """Encoded bytes (any format PIL reads) or an HWC/HW uint8 array -> RGB."""
  if isinstance(image, (bytes, bytearray, memoryview)):
    pil = Image.open(io.BytesIO(image))
  else:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
      raise ValueError(
          f'Expected encoded image bytes or a uint8 HWC array, got '
          f'{array.dtype} of shape {array.shape}.')
    if array.ndim == 3 and array.shape[-1] == 1:
      array = array[..., 0]
    pil = Image.fromarray(array)
  # JPEGs may be greyscale or CMYK (tfds converts ImageNet's CMYK ones).
  return pil if pil.mode == 'RGB' else pil.convert('RGB')


def random_resized_crop_params(
    height: int, width: int, rng: np.random.Generator,
    scale: Sequence[float] = SCALE,
    ratio: Sequence[float] = RATIO) -> tuple[int, int, int, int]:
  """torchvision's `RandomResizedCrop.get_params`, drawing from `rng`.

  Up to 10 tries of an area fraction uniform in `scale` and a log-uniform
  aspect ratio (w / h) in `ratio`, keeping the first that fits, at a uniform
  position; else the largest centred crop with the ratio clipped to `ratio`.

  Args:
    height: image height.
    width: image width.
    rng: the random generator (advanced by the draws).
    scale: bounds of the crop's area as a fraction of the image's.
    ratio: bounds of the crop's aspect ratio, width / height.

  Returns:
    `(top, left, h, w)` of the crop window.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect_ratio = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    w = int(round(math.sqrt(target_area * aspect_ratio)))
    h = int(round(math.sqrt(target_area / aspect_ratio)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  # Fallback: centre crop.
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def decode_train(image: ImageLike, rng: np.random.Generator,
                 size: int = 224) -> np.ndarray:
  """Training preprocessing of one example (torchvision's ImageNet recipe).

  Decodes (RGB), takes `random_resized_crop_params` (scale (0.08, 1), ratio
  (3/4, 4/3)), resizes the window to size x size (PIL bilinear, which
  antialiases when shrinking), then flips left-right if `rng.random() < 0.5`.

  Args:
    image: encoded image bytes (JPEG, or anything PIL reads), or an already
      decoded uint8 HWC (or HW) array.
    rng: the example's generator; the output is a function of the image and
      the generator's state.
    size: output height and width.

  Returns:
    uint8 [size, size, 3].
  """
  pil = _to_pil(image)
  top, left, h, w = random_resized_crop_params(pil.height, pil.width, rng)
  # Crop, then resize, as torchvision does: `resize(box=...)` would let the
  # antialiasing filter reach pixels just outside the window.
  pil = pil.crop((left, top, left + w, top + h))
  pil = pil.resize((size, size), Image.Resampling.BILINEAR)
  out = np.asarray(pil)
  if rng.random() < 0.5:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def decode_eval(image: ImageLike, size: int = 224,
                resize: int = 256) -> np.ndarray:
  """Evaluation preprocessing: shorter side to `resize`, centre `size` crop.

  As torchvision's `Resize(resize)` (bilinear, the longer side scaled to
  `int(resize * long / short)`) then `CenterCrop(size)` (offsets rounded).

  Args:
    image: encoded image bytes or a decoded uint8 HWC (or HW) array.
    size: output height and width.
    resize: length of the shorter side before cropping (>= size).

  Returns:
    uint8 [size, size, 3].
  """
  if resize < size:
    raise ValueError(f'resize ({resize}) must be >= size ({size}).')
  pil = _to_pil(image)
  width, height = pil.size
  if width <= height:
    new_w, new_h = resize, int(resize * height / width)
  else:
    new_w, new_h = int(resize * width / height), resize
  if (new_w, new_h) != (width, height):
    pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  return np.asarray(pil.crop((left, top, left + size, top + size)))


def augment_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
  """The generator of the example at `position` (in the global batch order
  of the epoch, 0 .. spe * global_batch_size - 1) of `epoch`."""
  return np.random.default_rng([seed, epoch, position, _AUGMENT_STREAM])
