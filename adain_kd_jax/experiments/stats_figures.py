"""The statistics scatter of a report: the student's channel statistics at
the first insertion point against the teacher's, before and after training.

Needs the run's checkpoints, its config (config.json, or the sweep's
sweep.json) and the test set; cached in the run's insertion_stats.npz.
"""

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


def _load_stats(path):
  with np.load(path) as z:
    return {'point': str(z['point']), 'step': int(z['step']),
            **{k: {'mean': z[f'{k}_mean'], 'std': z[f'{k}_std']}
               for k in ('teacher', 'before', 'after')}}


def _save_stats(path, stats):
  np.savez(path, point=stats['point'], step=stats['step'],
           **{f'{k}_{s}': stats[k][s] for k in ('teacher', 'before', 'after')
              for s in ('mean', 'std')})


def stats_figures(directory: str, runs, num_examples: int) -> list[str]:
  """Writes DIR/stats_scatter_<method>.png where possible; their names."""
  from adain_kd_jax.data import registry  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.data import sources  # pylint: disable=g-import-not-at-top
  names, images = [], {}
  for method in dict.fromkeys(r['method'] for r in runs):
    run = min((r for r in runs if r['method'] == method),
              key=lambda r: r['seed'])
    cache = os.path.join(run['dir'], STATS_CACHE)
    if (os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(
        os.path.join(run['dir'], 'summary.json'))):
      stats = _load_stats(cache)
    else:
      config = run_config(directory, run)
      if config is None or not os.path.isdir(os.path.join(run['dir'],
                                                          'checkpoints')):
        continue
      try:
        key = (config.dataset, config.data_source, config.data_dir)
        if key not in images:
          images[key] = sources.load(
              config.dataset, registry.DATASETS[config.dataset].test_split,
              source=config.data_source, data_dir=config.data_dir or None,
              download=False, limit=num_examples)[0]
        stats = plots.insertion_point_stats(config, run['dir'], images[key])
      except ValueError as e:
        if 'has no connector' not in str(e):
          print(f'No statistics plot for {method}: {e}', flush=True)
        continue
      except Exception as e:  # pylint: disable=broad-except
        # Data, teacher or checkpoints missing or unreadable: the figure is
        # optional, the tables are not.
        print(f'No statistics plot for {method}: {type(e).__name__}: {e}',
              flush=True)
        continue
      _save_stats(cache, stats)
    name = f'stats_scatter_{method}.png'
    plots.stats_scatter(
        stats['teacher'], stats['before'], stats['after'],
        os.path.join(directory, name),
        title=f'{method} (seed {run["seed"]}) at {stats["point"]}: step 0 '
        f'vs. step {stats["step"]}')
    names.append(name)
  return names
