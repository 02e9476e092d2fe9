"""The statistics scatter of a report: the student's channel statistics at
the first insertion point against the teacher's, before and after training.

Needs the run's checkpoints, its config (config.json, or the sweep's
sweep.json) and the test set; cached in the run's insertion_stats.npz, which
holds the sha256 of the summary.json it was made for: a committed cache
stands in for checkpoints that are not committed, and a run trained again
(a new summary) is measured again.
"""

import hashlib
import os
from typing import Any

import numpy as np

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import plots


STATS_CACHE = 'insertion_stats.npz'


def run_config(directory: str, run: dict[str, Any]):
  """The run's config: its config.json, else sweep.json's (None if neither)."""
  from adain_kd_jax.training import run_record
  path = os.path.join(run['dir'], 'config.json')
  if os.path.exists(path):
    return run_record.load(path)
  path = os.path.join(directory, 'sweep.json')
  if not os.path.exists(path):
    return None
  return run_record.one_run(
      run_record.from_dict(finished_runs.read_json(path)['config']),
      method=run['method'], seed=run['seed'])


def find_teacher(config, run_dir: str) -> None:
  """Points config.teacher_checkpoint, as the run recorded it, at the
  teacher: a relative path is looked for above the run's directory (the
  clone it was trained in), then by the path rule (`cli.resolve_path`), so
  that an installed package finds a clone's teacher too.

  Raises:
    FileNotFoundError: neither place has it; names both and the fix.
  """
  from adain_kd_jax import cli  # pylint: disable=g-import-not-at-top
  path = config.get('teacher_checkpoint', '')
  if not path or os.path.isabs(path):
    return
  tried, folder = [], os.path.abspath(run_dir)
  while True:
    tried.append(os.path.join(folder, path))
    if os.path.dirname(folder) == folder:
      break
    folder = os.path.dirname(folder)
  tried.append(cli.resolve_path(path))
  for candidate in tried:
    if os.path.isdir(candidate):
      config.teacher_checkpoint = candidate
      return
  raise FileNotFoundError(
      f'the teacher {path!r} that {run_dir} recorded is neither above the run '
      f'nor at {tried[-1]}; run the report from the clone the run was '
      'trained in, or pass --nostats.')


def _summary_sha(run_dir):
  with open(os.path.join(run_dir, 'summary.json'), 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def cached_stats(run_dir):
  """The run's cached statistics, or None if there is no cache or it was
  made for another summary.json (the run was trained again since)."""
  path = os.path.join(run_dir, STATS_CACHE)
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    if 'summary_sha256' not in z or str(
        z['summary_sha256']) != _summary_sha(run_dir):
      return None
    return {'point': str(z['point']), 'step': int(z['step']),
            **{k: {'mean': z[f'{k}_mean'], 'std': z[f'{k}_std']}
               for k in ('teacher', 'before', 'after')}}


def save_stats(run_dir, stats):
  np.savez(os.path.join(run_dir, STATS_CACHE), point=stats['point'],
           step=stats['step'], summary_sha256=_summary_sha(run_dir),
           **{f'{k}_{s}': stats[k][s] for k in ('teacher', 'before', 'after')
              for s in ('mean', 'std')})


def scatter_run(runs, method):
  """The run a method's scatter shows: its lowest seed with a valid cache
  or with checkpoints (only some runs may keep them), else its lowest."""
  mine = sorted((r for r in runs if r['method'] == method),
                key=lambda r: r['seed'])
  for r in mine:
    if (cached_stats(r['dir']) is not None
        or os.path.isdir(os.path.join(r['dir'], 'checkpoints'))):
      return r
  return mine[0]


def stats_figures(directory: str, runs, num_examples: int,
                  strict: bool = False) -> list[str]:
  """Writes DIR/stats_scatter_<method>.png where possible; their names.

  With `strict` (the figure was asked for), a figure that cannot be made
  raises instead of printing why it is missing.
  """
  from adain_kd_jax.data import loader  # pylint: disable=g-import-not-at-top
  names, images = [], {}
  for method in dict.fromkeys(r['method'] for r in runs):
    run = scatter_run(runs, method)
    stats = cached_stats(run['dir'])
    if stats is None:
      config = run_config(directory, run)
      if config is None or not os.path.isdir(os.path.join(run['dir'],
                                                          'checkpoints')):
        continue
      try:
        find_teacher(config, run['dir'])
        key = (config.dataset, config.data_source, config.data_dir,
               config.image_fit)
        if key not in images:
          images[key] = loader.test_images(config, num_examples)
        stats = plots.insertion_point_stats(config, run['dir'], images[key])
      except ValueError as e:
        if 'has no connector' in str(e):
          continue
        if strict:
          raise
        print(f'No statistics plot for {method}: {e}', flush=True)
        continue
      except Exception as e:  # pylint: disable=broad-except
        # Data, teacher or checkpoints missing or unreadable: the figure is
        # optional, the tables are not, unless it was asked for.
        if strict:
          raise
        print(f'No statistics plot for {method}: {type(e).__name__}: {e}',
              flush=True)
        continue
      save_stats(run['dir'], stats)
    name = f'stats_scatter_{method}.png'
    plots.stats_scatter(
        stats['teacher'], stats['before'], stats['after'],
        os.path.join(directory, name),
        title=f'{method} (seed {run["seed"]}) at {stats["point"]}: step 0 '
        f'vs. step {stats["step"]}')
    names.append(name)
  return names
