r"""The train command: trains a teacher or distils a student (flags -> library).

  adain-kd-train --config=configs/default.py --workdir=runs/default \
      [--config.method=kd --config.seed=1 ...]

`python train.py` in a clone and `python -m adain_kd_jax.main` run the same.
The config fields are documented in configs/default.py (one comment each);
`--helpfull` lists every flag. A --config file may be given by any path: the
directory above its configs/ package is put on the import path.

Re-running the same command resumes from the newest checkpoint in --workdir
(under the config recorded in WORKDIR/config.json: another one is refused,
see --resume_change). SIGTERM or Ctrl-C saves a checkpoint at the next step
and stops (exit status 0, or 130 after Ctrl-C); a second Ctrl-C aborts at
once. A usage or config error prints one line and exits with status 2
(--traceback: the traceback), and so does a workdir that another live trainer
has claimed (WORKDIR/claim.json, training/claims.py): the line names it.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from adain_kd_jax import cli
from adain_kd_jax import host_setup
from adain_kd_jax.training import run_record

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A configs/*.py file (any path); override fields with '
    '--config.x=y, documented in configs/default.py.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, '
                               'metrics.jsonl and summary.json go.')
_RESUME_CHANGE = flags.DEFINE_list(
    'resume_change', [], 'Fields that may differ from WORKDIR/config.json on '
    f'resume (of {", ".join(sorted(run_record.CHANGEABLE))}), e.g. --resume_change=num_epochs to train longer; '
    'listed in summary.json (config_changes).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-host: host:port of process 0. Unset '
    'with --num_processes > 1, ADAIN_KD_DISTRIBUTED=1 or in a SLURM job step '
    'of several tasks (srun -n N): auto-detected (TPU pods, SLURM, Open '
    'MPI).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'Multi-host: index of this process.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments {argv[1:]}: every argument is '
                         'a --flag (--help lists them).')
  config = cli.config_value(_CONFIG)
  # Before JAX is imported (orbax's INFO logs: -v 0 shows them).
  host_setup.prepare((config.batch_size, config.eval_batch_size))
  import jax  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import loop
  # Multi-host: one process per host, each started with the same command.
  # jax.distributed.initialize() must run before anything touches a device.
  if (_COORDINATOR.value or (_NUM_PROCESSES.value or 1) > 1
      or host_setup.distributed_from_environment()):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  summary = loop.train_and_evaluate(config, _WORKDIR.value,
                                         tuple(_RESUME_CHANGE.value))
  if config.compare_to and 'preempted_at' not in summary:
    summary = _compare(config, summary)
  if summary.get('interrupted'):
    return cli.EXIT_INTERRUPTED
  return 0


def _compare(config, summary):
  """Trains the same network with config.compare_to; prints both results.

  The other run lives in WORKDIR/compare_<method> (resumable like any run).
  Returns its summary (a stopped one, if it was stopped).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import loop
  other = run_record.one_run(config, method=config.compare_to, export=False)
  other_summary = loop.train_and_evaluate(
      other, os.path.join(_WORKDIR.value, f'compare_{config.compare_to}'))
  if 'preempted_at' in other_summary or jax.process_index() != 0:
    return other_summary
  teacher = summary.get('teacher_test_accuracy')
  lines = [f'Student {summary["model"]} on {summary["dataset"]}'
           + (f', teacher {summary["teacher"]} (test accuracy {teacher:.4f})'
              if teacher is not None else '') + ':']
  for s in (summary, other_summary):
    lines.append(f'  {s["method"]:>9}: test accuracy {s["test_accuracy"]:.4f}'
                 f' (best {s["best_accuracy"]:.4f}, {s["steps"]} steps, '
                 f'{s["wall_seconds_total"]:.0f} s)')
  print('\n'.join(lines), flush=True)
  return other_summary


def run():
  """The console script `adain-kd-train`."""
  cli.run(main)


if __name__ == '__main__':
  run()
