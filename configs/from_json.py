r"""The config a run recorded: re-runs or resumes it exactly.

  python train.py --config=configs/from_json.py:runs/x/config.json \
      --workdir=runs/x

The sweep and the campaign write every run's full config to
WORKDIR/config.json; this file turns it back into a config, so `sweep --parallel` and
`campaign` start each run as its own `train.py` process. JSON has no tuples:
lists come back as tuples.
"""

import json

import ml_collections


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
    return ml_collections.ConfigDict(_tuples(json.load(f)))
