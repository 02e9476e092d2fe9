"""Which examples each host reads at each step: stateless index batches.

Training batches are a pure function of (seed, step): step s reads offset
`s % spe` of epoch `s // spe` (spe = `steps_per_epoch`, the remainder
dropped), and epoch e is ordered by `epoch_permutation(n, seed, e)`, so a run
resumed at step s sees exactly the batches it would have seen, with no
iterator state to checkpoint beyond the step. Each host reads its own
contiguous slice of every global batch, the layout that
`jax.make_array_from_process_local_data` expects. Evaluation reads the split
in order, the last global batch padded and masked (`eval_ranges`).

The rule is the same for every data set: the in-memory ones gather their
arrays here (`gather`, `train_batches`, `eval_batches`); the streamed ones
(`imagenet`) read and decode the same positions.
"""

from typing import Iterator

import numpy as np

Batch = dict[str, np.ndarray]


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


def local_batch_size(global_batch_size: int, process_index: int,
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


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
  """The order of the n training examples in `epoch`."""
  return np.random.default_rng([seed, epoch]).permutation(n)


def _check_lengths(images: np.ndarray, labels: np.ndarray) -> int:
  if len(images) != len(labels):
    raise ValueError(f'{len(images)} images but {len(labels)} labels.')
  return len(images)


def train_indices(n: int, *, global_batch_size: int, seed: int,
                  start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[np.ndarray]:
  """Infinite iterator of this host's training-example indices per step.

  Step s reads offset `s % spe` of epoch `s // spe` (spe = steps per epoch,
  remainder dropped); epoch e is ordered by `epoch_permutation(n, seed, e)`;
  this host takes its contiguous slice of each global batch. Stateless: any
  step can be the first, which is what makes resuming exact.

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
  local = local_batch_size(global_batch_size, process_index, process_count)
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
      perm = epoch_permutation(n, seed, epoch)
    start = (step % spe) * global_batch_size + begin
    # Kept in permutation order (not sorted for locality) so that the hosts'
    # slices concatenate to exactly the one-host global batch.
    yield perm[start:start + local].astype(np.int32)
    step += 1


def gather(images: np.ndarray, labels: np.ndarray,
           indices: np.ndarray) -> Batch:
  """The examples at `indices`: {'image', 'label' (int32), 'index'}."""
  # 'index': the position in the training set (CRD's memory bank needs it).
  return {'image': images[indices],
          'label': labels[indices].astype(np.int32), 'index': indices}


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
  return (gather(images, labels, i) for i in indices)


def num_eval_batches(n: int, global_batch_size: int) -> int:
  """Batches `eval_batches` yields: ceil(n / global_batch_size)."""
  return -(-n // global_batch_size)


def eval_ranges(n: int, *, global_batch_size: int, process_index: int = 0,
                process_count: int = 1) -> list[tuple[int, int]]:
  """This host's `(start, stop)` of every evaluation batch, in order.

  Batch b covers examples `[b * global_batch_size, ...)` of the split, this
  host its contiguous slice of `local_batch_size` of them; `stop - start` may
  be less (the last global batch), even 0, so the batch is padded.
  `num_eval_batches(n, global_batch_size)` ranges on every host.
  """
  local = local_batch_size(global_batch_size, process_index, process_count)
  ranges = []
  for b in range(num_eval_batches(n, global_batch_size)):
    start = b * global_batch_size + local * process_index
    ranges.append((start, max(min(start + local, n), start)))
  return ranges


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
  n = _check_lengths(images, labels)
  local = local_batch_size(global_batch_size, process_index, process_count)
  ranges = eval_ranges(n, global_batch_size=global_batch_size,
                       process_index=process_index,
                       process_count=process_count)
  return (_padded(images, labels, start, stop, local)
          for start, stop in ranges)


def _padded(images, labels, start, stop, local) -> Batch:
  """Examples [start, stop) padded with zeros to `local`, and their mask."""
  real = stop - start
  image = np.zeros((local,) + images.shape[1:], images.dtype)
  label = np.zeros((local,), np.int32)
  mask = np.zeros((local,), np.float32)
  image[:real] = images[start:stop]
  label[:real] = labels[start:stop]
  mask[:real] = 1.0
  return {'image': image, 'label': label, 'mask': mask}
