"""Batching of in-memory data sets, and augmentation on the device.

Host side (numpy): the data sets here fit in memory, so a batch is a set of
indices into the arrays. Training batches are a pure function of (seed,
step): epoch e is shuffled by `np.random.default_rng([seed, e])`, so a run
resumed at step s sees exactly the batches it would have seen, with no
iterator state to checkpoint beyond the step. Each host reads its own
contiguous slice of every global batch, the layout that
`jax.make_array_from_process_local_data` expects.

Device side (JAX, jit-able): random crop and flip are done on the raw uint8
images, then normalisation, in the order of torchvision's
`RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize()`
so the zero padding is black pixels, as in the PyTorch recipes we compare to.
"""

from typing import Iterator, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, np.ndarray]
Floats = Union[float, Sequence[float], np.ndarray, jax.Array]


def steps_per_epoch(n: int, global_batch_size: int) -> int:
  """Full training batches per epoch (the remainder is dropped)."""
  if global_batch_size < 1:
    raise ValueError(
        f'global_batch_size must be positive, got {global_batch_size}.')
  if global_batch_size > n:
    raise ValueError(
        f'global_batch_size {global_batch_size} exceeds the {n} training '
        'examples, so an epoch would have no full batch; lower the batch size '
        '(config batch_size) or use more data.')
  return n // global_batch_size


def _local_size(global_batch_size: int, process_index: int,
                process_count: int) -> int:
  """Per-host batch size, checking the process layout."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index={process_index} must be in [0, process_count='
        f'{process_count}).')
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size {global_batch_size} must be a positive multiple '
        f'of process_count {process_count} so that each host gets an equal '
        'slice; change the batch size.')
  return global_batch_size // process_count


def _check_lengths(images: np.ndarray, labels: np.ndarray) -> int:
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels.')
  return len(images)


def train_indices(n: int, *, global_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[np.ndarray]:
  """Infinite iterator of this host's training-example indices per step.

  Step s reads offset `s % spe` of epoch `s // spe` (spe = steps per epoch,
  remainder dropped); epoch e is ordered by
  `np.random.default_rng([seed, e]).permutation(n)`; this host takes its
  contiguous slice of each global batch. Stateless: any step can be the
  first, which is what makes resuming exact.

  Args:
    n: number of training examples.
    global_batch_size: examples per step over all hosts.
    seed: shuffling seed; the same seed gives the same batches.
    start_step: the first step to yield (to resume a run).
    process_index: this host's index (`jax.process_index()`).
    process_count: number of hosts (`jax.process_count()`).

  Returns:
    An iterator of int32 arrays of B = global_batch_size // process_count.
  """
  spe = steps_per_epoch(n, global_batch_size)
  local = _local_size(global_batch_size, process_index, process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  # Checked eagerly above; the generator below only does the work.
  return _train_indices(n, global_batch_size, seed, start_step, spe,
                        local * process_index, local)


def _train_indices(n, global_batch_size, seed, start_step, spe, begin, local):
  """The generator behind `train_indices`."""
  epoch, perm = None, None
  step = start_step
  while True:
    if step // spe != epoch:
      epoch = step // spe
      perm = np.random.default_rng([seed, epoch]).permutation(n)
    start = (step % spe) * global_batch_size + begin
    # Kept in permutation order (not sorted for locality) so that the hosts'
    # slices concatenate to exactly the one-host global batch.
    yield perm[start:start + local].astype(np.int32)
    step += 1


def train_batches(images: np.ndarray, labels: np.ndarray, *,
                  global_batch_size: int, seed: int, start_step: int = 0,
                  process_index: int = 0,
                  process_count: int = 1) -> Iterator[Batch]:
  """Infinite iterator of this host's training batches from `start_step` on.

  The examples of `train_indices` (see there), gathered on the host.

  Args:
    images: [N, H, W, C] uint8.
    labels: [N] int.
    global_batch_size, seed, start_step, process_index, process_count: as in
      `train_indices`.

  Returns:
    An iterator of `{'image': uint8 [B, H, W, C], 'label': int32 [B],
    'index': int32 [B]}` with B = global_batch_size // process_count.
  """
  n = _check_lengths(images, labels)
  indices = train_indices(n, global_batch_size=global_batch_size, seed=seed,
                          start_step=start_step, process_index=process_index,
                          process_count=process_count)
  return ({'image': images[i], 'label': labels[i].astype(np.int32),
           # Position in the training set (CRD's memory bank needs it).
           'index': i} for i in indices)


def num_eval_batches(n: int, global_batch_size: int) -> int:
  """Batches `eval_batches` yields: ceil(n / global_batch_size)."""
  return -(-n // global_batch_size)


def eval_batches(images: np.ndarray, labels: np.ndarray, *,
                 global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[Batch]:
  """Finite iterator over the whole set in order, this host's slices.

  Every batch has the full size so that the eval step compiles once: the last
  global batch is padded with zero images, and `'mask'` (float32, 1 real,
  0 padding) lets metrics count each example exactly once over all hosts.

  Args:
    images: [N, H, W, C] uint8.
    labels: [N] int.
    global_batch_size: examples per step over all hosts.
    process_index: this host's index.
    process_count: number of hosts.

  Returns:
    An iterator of `{'image', 'label', 'mask'}` batches of
    global_batch_size // process_count examples;
    `num_eval_batches(N, global_batch_size)` of them on every host.
  """
  _check_lengths(images, labels)
  local = _local_size(global_batch_size, process_index, process_count)
  return _eval_batches(images, labels, global_batch_size,
                       local * process_index, local)


def _eval_batches(images, labels, global_batch_size, begin, local):
  """The generator behind `eval_batches`."""
  n = len(images)
  for b in range(num_eval_batches(n, global_batch_size)):
    start = b * global_batch_size + begin
    stop = min(start + local, n)
    real = max(stop - start, 0)
    image = np.zeros((local,) + images.shape[1:], images.dtype)
    label = np.zeros((local,), np.int32)
    mask = np.zeros((local,), np.float32)
    if real:
      image[:real] = images[start:stop]
      label[:real] = labels[start:stop]
      mask[:real] = 1.0
    yield {'image': image, 'label': label, 'mask': mask}


# ----------------------------------------------------------------------------
# Device side: pure JAX, to run inside the jitted step.
# ----------------------------------------------------------------------------


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
