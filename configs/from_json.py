r"""The config a run recorded: re-runs or resumes it exactly.

  python train.py --config=configs/from_json.py:runs/x/config.json \
      --workdir=runs/x

The sweep and the campaign write every run's full config to
WORKDIR/config.json; this file turns it back into a config, so `sweep --parallel` and
`campaign` start each run as its own `train.py` process. JSON has no tuples:
lists come back as tuples. A config recorded before a field existed gets the
value that reproduces what that run did (`OLDER_RUNS`).
"""

import json

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


def fill_older(recorded: dict) -> dict:
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


def get_config(path: str):
  """Returns the ConfigDict stored in the JSON file `path`."""
  if not path:
    raise ValueError('configs/from_json.py needs a path: '
                     '--config=configs/from_json.py:RUN_DIR/config.json.')
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(fill_older(json.load(f))))
