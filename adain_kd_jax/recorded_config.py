"""A run's config as its config.json records it, read back exactly.

JSON has no tuples: lists come back as tuples. A recording made before a
field existed gets the value that reproduces what that run did
(`OLDER_RUNS`), so an older run resumes, re-runs and is reported under its
own config, never under a newer default.
"""

import json
from typing import Any

import ml_collections

# Fields added since runs were first recorded: the value under which an older
# run's recording means what it meant then (a callable reads the recording).
OLDER_RUNS = {
    'holdout_seed': -1,  # The split followed the run's own seed.
    'train_per_class': 0,
    'connector_relu': False,
    'loss.adain_temperature': lambda c: c['loss']['temperature'],
    'loss.adain_warmup_epochs': 0.0,
    'loss.stat_mean': 0.0,
}


def fill_older(recorded: dict[str, Any]) -> dict[str, Any]:
  """`recorded` with the fields it predates set as `OLDER_RUNS` says."""
  out = {k: dict(v) if isinstance(v, dict) else v
         for k, v in recorded.items()}
  for field, value in OLDER_RUNS.items():
    *parents, leaf = field.split('.')
    node = out
    for part in parents:
      node = node.get(part)
      if node is None:
        break
    if node is not None and leaf not in node:
      node[leaf] = value(out) if callable(value) else value
  return out


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def from_dict(recorded: dict[str, Any]) -> ml_collections.ConfigDict:
  """The ConfigDict of a recorded (JSON-decoded) config."""
  return ml_collections.ConfigDict(_tuples(fill_older(recorded)))


def load(path: str) -> ml_collections.ConfigDict:
  """The ConfigDict stored in the JSON file `path`."""
  with open(path) as f:
    return from_dict(json.load(f))
