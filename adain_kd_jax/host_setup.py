"""Process set-up shared by the entry points (train.py, sweep.py).

Defines their common flags `--cpu_devices` and `--compilation_cache`. Imports
no JAX at module level: `set_cpu_devices` must run before JAX is imported,
because XLA reads its flags once.
"""

import math
import os

from absl import flags

CPU_DEVICES = flags.DEFINE_string(
    'cpu_devices', '1', "XLA CPU devices: a number, or 'auto' = one per core "
    '(the largest count <= cores that divides the batch sizes). One device '
    'already uses every core for each operation; several gained at most '
    '1.3x here and, on an oversubscribed machine, their all-reduce can time '
    'out (XLA aborts after 40 s). No effect on GPU/TPU runs.')
COMPILATION_CACHE = flags.DEFINE_string(
    'compilation_cache', os.path.expanduser('~/.cache/adain_kd_jax_jit'),
    "JAX's persistent compilation cache ('' = off).")


def set_cpu_devices(config, cpu_devices: str | None = None) -> None:
  """Sets XLA's CPU device count (`--cpu_devices` unless given) for `config`.

  Must run before JAX is imported. Leaves an XLA_FLAGS that already sets the
  count alone.
  """
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return
  value = CPU_DEVICES.value if cpu_devices is None else cpu_devices
  if value == 'auto':
    batch = math.gcd(config.batch_size, config.eval_batch_size)
    n = max(d for d in range(1, (os.cpu_count() or 1) + 1) if batch % d == 0)
  else:
    n = int(value)
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={n}')


def enable_compilation_cache(cache_dir: str | None = None) -> None:
  """Turns on JAX's persistent compilation cache (`--compilation_cache`)."""
  cache_dir = COMPILATION_CACHE.value if cache_dir is None else cache_dir
  if cache_dir:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', cache_dir)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
