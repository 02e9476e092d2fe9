r"""Runs a grid of methods x seeds: one after the other in one process, or
N at once on one accelerator (`--parallel=N`, one process each).

  python -m adain_kd_jax.experiments.sweep --config=configs/default.py \
      --methods=none,kd,stat_l2,adain,adain_kd --seeds=0,1,2 \
      --workdir=runs/sweep [--config.num_epochs=2 ...]
  python -m adain_kd_jax.experiments.report runs/sweep

Small models leave an accelerator mostly idle: `--parallel=10` trains ten
cells at once, each in its own `train.py` process with a tenth of the device
memory (see parallel.py); each one resumable as below.

Every run gets a copy of the config (the `--config.x=y` overrides apply to all
of them) with `method` and `seed` set and `compare_to=''`, and trains in
`WORKDIR/<method>/seed<k>/` through `loop.train_and_evaluate`. A run
whose `summary.json` exists is finished and skipped; any other run is started
or, when it has checkpoints, resumed. So re-running the same command after a
crash or a preemption continues where the grid stopped. A preempted run
(SIGTERM, or Ctrl-C) stops the sweep, which exits with status 0 (130 after
Ctrl-C): run it again to resume. A usage or config error prints one line and
exits with status 2.
`WORKDIR/sweep.json` records the grid and the config, and each run's
`config.json` its own config (report.py reads them).

On a cluster, one job per accelerator: give every job one cell of the grid
and the same --workdir (on a shared file system), e.g. with SLURM

  for m in none kd stat_l2 adain adain_kd; do for s in 0 1 2; do
    sbatch --gres=gpu:1 --wrap="python -m adain_kd_jax.experiments.sweep \
        --config=configs/default.py --methods=$m --seeds=$s \
        --workdir=/shared/sweep --config.num_epochs=200"
  done; done

and once they have all finished, `python -m adain_kd_jax.experiments.report
/shared/sweep`. Jobs never write to the same run directory; each merges its
cell into `sweep.json`. A requeued job resumes its run.
"""

import json
import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from adain_kd_jax import cli
from adain_kd_jax import host_setup
from adain_kd_jax.training import run_record
from adain_kd_jax.training import summary as summary_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A configs/*.py file; override fields with --config.x=y '
    '(for every run of the grid).', lock_config=True)
_METHODS = flags.DEFINE_list(
    'methods', ['none', 'kd', 'stat_l2', 'adain', 'adain_kd'],
    'Comma-separated methods (config.method values, see methods.METHODS).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'],
                           'Comma-separated integer seeds.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'Runs at once, each in its own train.py process with a '
    'share of the accelerator memory (XLA_PYTHON_CLIENT_MEM_FRACTION = '
    '0.9 / N unless set). 1: one after the other in this process.')
_GRID = flags.DEFINE_bool(
    'grid', False, 'Train the whole table in this process as grids: one '
    'jitted step for every member, one batch per seed, the teacher\'s '
    'forward computed once per seed and batch (grid.py).')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The sweep directory: runs go to WORKDIR/<method>/'
    'seed<k>/, the grid to WORKDIR/sweep.json.')
SWEEP_JSON = 'sweep.json'


def run_dir(workdir: str, method: str, seed: int) -> str:
  """Where the run of `method` with `seed` lives."""
  return os.path.join(workdir, method, f'seed{seed}')


def run_config(config: ml_collections.ConfigDict, method: str,
               seed: int) -> ml_collections.ConfigDict:
  """A copy of `config` for one cell of the grid."""
  return run_record.one_run(config, method=method, seed=seed)


def _unique(items):
  return list(dict.fromkeys(items))


def write_sweep_json(workdir: str, config: ml_collections.ConfigDict,
                     methods: Sequence[str], seeds: Sequence[int]) -> dict:
  """Writes (or merges this grid into) WORKDIR/sweep.json; returns it.

  Jobs of one sweep started separately (one cell each) add their methods and
  seeds to the file. The config of the newest job is kept; a different one is
  reported, as its runs would not be comparable.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, SWEEP_JSON)
  config_dict = json.loads(config.to_json_best_effort())
  record = {'methods': list(methods), 'seeds': list(seeds),
            'config': config_dict}
  if os.path.exists(path):
    try:
      with open(path) as f:
        old = json.load(f)
    except (OSError, ValueError):
      old = None
    if old:
      record['methods'] = _unique(list(old.get('methods', [])) +
                                  record['methods'])
      record['seeds'] = sorted(_unique(list(old.get('seeds', [])) +
                                       record['seeds']))
      if old.get('config') not in (None, config_dict):
        changed = sorted(
            k for k in set(old['config']) | set(config_dict)
            if old['config'].get(k) != config_dict.get(k)
            and k not in ('method', 'seed', 'compare_to'))
        if changed:
          logging.warning('%s had another config (fields %s differ); it now '
                          'records this one.', path, ', '.join(changed))
          print(f'Warning: the config differs from the one in {path} in '
                f'{", ".join(changed)}; finished runs keep their results.',
                flush=True)
  run_record.write_json(path, record)
  return record


def train_cells_in_turn(config: ml_collections.ConfigDict,
                        methods: Sequence[str], seeds: Sequence[int],
                        workdir: str,
                        train_fn: Callable[..., dict[str, Any]] | None = None,
                        ) -> dict[tuple[str, int], Any]:
  """Trains every (method, seed) not yet finished, in order.

  Args:
    config: the base config.
    methods: config.method values.
    seeds: config.seed values.
    workdir: the sweep directory.
    train_fn: `train_and_evaluate(config, workdir)`; default loop.train_and_evaluate.

  Returns:
    {(method, seed): summary dict, or 'skipped'}, for the runs handled
    before the sweep ended; a preempted run ends it (its value has
    'preempted_at').
  """
  from adain_kd_jax.training import config_checks
  # Every cell's config is checked before the first run starts.
  for method in methods:
    for seed in seeds:
      config_checks.check(run_config(config, method, seed))
  if train_fn is None:
    from adain_kd_jax.training import loop
    train_fn = loop.train_and_evaluate
  write_sweep_json(workdir, config, methods, seeds)
  results = {}
  cells = [(m, s) for m in methods for s in seeds]
  for i, (method, seed) in enumerate(cells):
    directory = run_dir(workdir, method, seed)
    tag = f'[{i + 1}/{len(cells)}] {method} seed {seed}'
    if summary_lib.finished(directory):
      print(f'{tag}: finished ({directory}/summary.json), skipped.',
            flush=True)
      results[(method, seed)] = 'skipped'
      continue
    print(f'{tag}: training in {directory}.', flush=True)
    cell_config = run_config(config, method, seed)
    with cli.user_errors():  # A cell begun under another config: refused.
      run_record.check_and_write(directory, cell_config)
    summary = train_fn(cell_config, directory)
    results[(method, seed)] = summary
    if 'preempted_at' in summary:
      print(f'{tag}: preempted; run the same command again to resume the '
            'sweep.', flush=True)
      break
  return results


def train_cells_as_grid(config: ml_collections.ConfigDict,
                        methods: Sequence[str], seeds: Sequence[int],
                        workdir: str) -> dict[tuple[str, int], Any]:
  """train_cells_in_turn, but every unfinished cell trains in one grid
  (`--grid`).

  Cells are the same runs in the same directories as train_cells_in_turn's;
  finished ones are skipped, stopped ones resume. Returns {(method, seed): summary,
  'skipped' or {'failed': message}}.
  """
  from adain_kd_jax.training import config_checks
  from adain_kd_jax.training import grid
  cells = [(m, s) for m in methods for s in seeds]
  configs = {c: run_config(config, *c) for c in cells}
  for cell_config in configs.values():
    config_checks.check(cell_config)
  write_sweep_json(workdir, config, methods, seeds)
  entries = []
  for (method, seed), cell_config in configs.items():
    directory = run_dir(workdir, method, seed)
    if summary_lib.finished(directory):
      print(f'{method} seed {seed}: finished ({directory}/summary.json), '
            'skipped.', flush=True)
    else:
      os.makedirs(directory, exist_ok=True)
      with cli.user_errors():  # A cell begun under another config: refused.
        run_record.check_and_write(directory, cell_config)
    entries.append((cell_config, directory))
  out = grid.train_members(entries)
  return {c: out[run_dir(workdir, *c)] for c in cells
          if run_dir(workdir, *c) in out}


def train_cells_in_parallel(config: ml_collections.ConfigDict,
                            methods: Sequence[str], seeds: Sequence[int],
                            workdir: str, num_parallel: int) -> dict[str, str]:
  """train_cells_in_turn with `num_parallel` train.py processes at once.

  Each cell's config goes to its `config.json`, which its process trains
  (configs/from_json.py); finished cells are skipped and stopped ones
  resume, as in train_cells_in_turn. Returns {run_dir: status}
  (parallel.run_jobs).
  """
  from adain_kd_jax.experiments import parallel
  from adain_kd_jax.training import config_checks
  jobs = []
  for method in methods:
    for seed in seeds:
      cell_config = run_config(config, method, seed)
      config_checks.check(cell_config)
      jobs.append(parallel.Job(run_dir(workdir, method, seed), cell_config))
      with cli.user_errors():  # A cell begun under another config: refused.
        run_record.check_resume(jobs[-1].run_dir, cell_config)
  write_sweep_json(workdir, config, methods, seeds)
  status = parallel.run_jobs(jobs, num_parallel,
                             log=lambda line: print(line, flush=True))
  failed = {d: s for d, s in status.items() if s.startswith('failed')}
  for directory, value in failed.items():
    print(f'{directory}: {value}; its output is in {directory}/log.txt.',
          flush=True)
  return status


def _parse_seeds(values: Sequence[str]) -> list[int]:
  try:
    return _unique(int(v) for v in values)
  except ValueError:
    raise app.UsageError(f'--seeds must be integers, got {values}.') from None


def _print_table(methods: Sequence[str], seeds: Sequence[int]) -> None:
  """The table of the sweep's finished runs, as its last lines."""
  from adain_kd_jax.experiments import report  # pylint: disable=g-import-not-at-top
  text = report.trained_tables(
      [run_dir(_WORKDIR.value, m, s) for m in methods for s in seeds])
  if text:
    print(text, flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = cli.config_value(_CONFIG)
  methods = _unique(_METHODS.value)
  seeds = _parse_seeds(_SEEDS.value)
  if not methods or not seeds:
    raise app.UsageError('--methods and --seeds must not be empty.')
  if _PARALLEL.value < 1:
    raise app.UsageError(f'--parallel={_PARALLEL.value} must be >= 1.')
  if _PARALLEL.value > 1 and _GRID.value:
    raise app.UsageError('--grid trains in this process: drop --parallel.')
  if _PARALLEL.value > 1:
    status = train_cells_in_parallel(config, methods, seeds, _WORKDIR.value,
                                     _PARALLEL.value)
    _print_table(methods, seeds)
    if any(s.startswith('failed') for s in status.values()):
      raise SystemExit(1)
    return
  # Before JAX is imported.
  host_setup.prepare((config.batch_size, config.eval_batch_size))
  if _GRID.value:
    results = train_cells_as_grid(config, methods, seeds, _WORKDIR.value)
  else:
    results = train_cells_in_turn(config, methods, seeds, _WORKDIR.value)
  _print_table(methods, seeds)
  if any(isinstance(r, dict) and r.get('interrupted')
         for r in results.values()):
    return cli.EXIT_INTERRUPTED
  if any(isinstance(r, dict) and 'failed' in r for r in results.values()):
    return 1
  return 0


def run():
  """The console script `adain-kd-sweep`."""
  # Here, not at import: tests import this module without its flags.
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)


if __name__ == '__main__':
  run()
