r"""Trains a teacher or distils a student. Thin entry point: flags -> library.

  python train.py --config=configs/default.py --workdir=runs/default \
      [--config.method=kd --config.seed=1 ...]

Re-running the same command resumes from the newest checkpoint in --workdir.
"""

import math
import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A configs/*.py file; override fields with --config.x=y.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, '
                               'metrics.jsonl and summary.json go.')
_CPU_DEVICES = flags.DEFINE_string(
    'cpu_devices', 'auto', "XLA CPU devices: 'auto' = one per core (the "
    'largest count <= cores that divides the batch sizes), or a number. '
    'Splitting the batch over cores is faster than one device on CPU; it '
    'does not affect GPU/TPU runs.')
_CACHE = flags.DEFINE_string(
    'compilation_cache', os.path.expanduser('~/.cache/adain_kd_jax_jit'),
    "JAX's persistent compilation cache ('' = off).")
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-host: host:port of process 0. Unset '
    'with --num_processes > 1 or ADAIN_KD_DISTRIBUTED=1: auto-detected '
    '(TPU pods, SLURM, Open MPI).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'Multi-host: index of this process.')
flags.mark_flags_as_required(['config', 'workdir'])


def _set_cpu_devices(config):
  """Must run before JAX is imported: XLA reads its flags once."""
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return
  if _CPU_DEVICES.value == 'auto':
    batch = math.gcd(config.batch_size, config.eval_batch_size)
    n = max(d for d in range(1, (os.cpu_count() or 1) + 1) if batch % d == 0)
  else:
    n = int(_CPU_DEVICES.value)
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={n}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  _set_cpu_devices(config)
  # orbax logs every checkpoint write at INFO; -v 0 (or --verbosity=0) shows it.
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from adain_kd_jax import train_lib  # pylint: disable=g-import-not-at-top

  if _CACHE.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  # Multi-host: one process per host, each started with the same command.
  # jax.distributed.initialize() must run before anything touches a device.
  if (_COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1
      or os.environ.get('ADAIN_KD_DISTRIBUTED')):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  train_lib.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
