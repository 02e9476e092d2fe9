"""Process set-up shared by the entry points (`prepare`: train.py, sweep, campaign,
benchmarks).

Defines their common flags `--cpu_devices`, `--cpu_ynnpack` and
`--compilation_cache`. Imports no JAX at module level: `set_cpu_devices` and
`set_xla_cpu_flags` must run before JAX is imported, because XLA reads its
flags once.
"""

import importlib.metadata
import math
import os
import sys
from typing import Sequence

from absl import flags
from absl import logging

# XLA:CPU flag: hand dots (convolutions included) and reductions to YNNPACK,
# which runs them on every core; XLA's own convolution thunk kept one core
# busy most of the time on the 2-core CPU. Only set for the jaxlib versions
# it was tested with: XLA aborts on a flag or a fusion type it does not know,
# and the flag is experimental.
YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'
_YNN_JAXLIB_VERSIONS = ('0.10.',)

CPU_DEVICES = flags.DEFINE_string(
    'cpu_devices', '1', "XLA CPU devices: a number, or 'auto' = one per core "
    '(the largest count <= cores that divides the batch sizes). With '
    '--cpu_ynnpack one device uses every core; two were within 8% of one on '
    'a 2-core CPU and, on an oversubscribed machine, their all-reduce can '
    'time out (XLA aborts after 40 s). No effect on GPU/TPU runs.')


def _valid_cpu_devices(value: str) -> bool:
  return value == 'auto' or (value.isdigit() and int(value) >= 1)


flags.register_validator(
    'cpu_devices', _valid_cpu_devices,
    message="--cpu_devices must be a number >= 1 or 'auto'.")
CPU_YNNPACK = flags.DEFINE_bool(
    'cpu_ynnpack', True, "Run XLA:CPU's convolutions, dots and reductions "
    f'through YNNPACK ({YNN_FLAG}): the distillation step was 1.35x faster '
    'on a 2-core CPU (benchmarks/README.md). False: XLA:CPU\'s defaults. No '
    'effect on GPU/TPU computations, nor where XLA_FLAGS already sets '
    'xla_cpu_experimental_ynn_fusion_type.')
COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', os.path.expanduser('~/.cache/adain_kd_jax_jit'),
    "JAX's persistent compilation cache ('' = off).")


def set_cpu_devices(batch_sizes: Sequence[int],
                    cpu_devices: str | None = None) -> None:
  """Sets XLA's CPU device count (`--cpu_devices` unless given).

  Must run before JAX is imported. Leaves an XLA_FLAGS that already sets the
  count alone (and says so on stderr if `--cpu_devices` was given).

  Args:
    batch_sizes: the batch sizes the devices must divide ('auto' picks the
      largest count <= cores that divides them all).
    cpu_devices: a number or 'auto'; None: `--cpu_devices`.

  Raises:
    ValueError: for a value that is neither 'auto' nor a number >= 1.
  """
  value = CPU_DEVICES.value if cpu_devices is None else cpu_devices
  if not _valid_cpu_devices(value):
    raise ValueError(f"--cpu_devices must be a number >= 1 or 'auto', got "
                     f'{value!r}.')
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' in xla_flags:
    if cpu_devices is None and flags.FLAGS['cpu_devices'].present:
      print(f'XLA_FLAGS already sets the CPU device count ({xla_flags!r}); '
            '--cpu_devices is ignored.', file=sys.stderr)
    return
  if value == 'auto':
    batch = math.gcd(*batch_sizes)
    n = max(d for d in range(1, (os.cpu_count() or 1) + 1) if batch % d == 0)
  else:
    n = int(value)
  os.environ['XLA_FLAGS'] = (
      f'{xla_flags} --xla_force_host_platform_device_count={n}').strip()


def set_xla_cpu_flags(ynnpack: bool | None = None) -> bool:
  """Adds `YNN_FLAG` to XLA_FLAGS if wanted (`--cpu_ynnpack` unless given).

  Must run before JAX is imported. Leaves an XLA_FLAGS that already sets the
  YNN fusion types alone, and does nothing for a jaxlib not known to have the
  flag.

  Args:
    ynnpack: whether to add the flag; None: `--cpu_ynnpack`.

  Returns:
    Whether XLA_FLAGS now asks for YNNPACK fusions.
  """
  xla_flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_experimental_ynn_fusion_type' in xla_flags:
    return YNN_FLAG in xla_flags
  wanted = CPU_YNNPACK.value if ynnpack is None else ynnpack
  try:
    jaxlib_version = importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return False
  if not wanted or not jaxlib_version.startswith(_YNN_JAXLIB_VERSIONS):
    return False
  os.environ['XLA_FLAGS'] = f'{xla_flags} {YNN_FLAG}'.strip()
  return True


def distributed_from_environment() -> bool:
  """Whether this process is one of several of one run, as its environment
  says: ADAIN_KD_DISTRIBUTED=1, or a SLURM job step of several tasks
  (`srun -n 2 python train.py ...`; SLURM_STEP_NUM_TASKS, which the batch
  script itself does not have). jax.distributed.initialize() then finds its
  peers in that environment."""
  if os.environ.get('ADAIN_KD_DISTRIBUTED'):
    return True
  tasks = os.environ.get('SLURM_STEP_NUM_TASKS', '1')
  return tasks.isdigit() and int(tasks) > 1


def enable_compilation_cache(cache_dir: str | None = None) -> None:
  """Turns on JAX's persistent compilation cache (`--compilation_cache`)."""
  cache_dir = COMPILATION_CACHE.value if cache_dir is None else cache_dir
  if cache_dir:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def prepare(batch_sizes: Sequence[int], *, cpu_devices: str | None = None,
            ynnpack: bool | None = None,
            compilation_cache: str | None = None) -> None:
  """The set-up every entry point runs first, before it imports JAX.

  Sets the CPU device count and XLA:CPU's flags (`set_cpu_devices`,
  `set_xla_cpu_flags`), quiets absl's INFO logs (orbax logs every
  checkpoint write there) unless `--verbosity` was given, and turns on the
  persistent compilation cache. Each keyword, where given, stands in for
  its flag (for entry points that do not define them); '' turns the cache
  off.
  """
  set_cpu_devices(batch_sizes, cpu_devices)
  set_xla_cpu_flags(ynnpack)
  if 'verbosity' in flags.FLAGS and not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  enable_compilation_cache(compilation_cache)
