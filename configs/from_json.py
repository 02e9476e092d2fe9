r"""The config a run recorded: re-runs or resumes it exactly.

  python train.py --config=configs/from_json.py:runs/x/config.json \
      --workdir=runs/x

The sweep and the campaign write every run's full config to
WORKDIR/config.json; this file turns it back into a config, so `sweep --parallel` and
`campaign` start each run as its own `train.py` process. Lists come back as
tuples, and a config recorded before a field existed gets the value that
reproduces what that run did (adain_kd_jax/training/run_record.py).
"""

from adain_kd_jax.training import run_record


def get_config(path: str):
  """Returns the ConfigDict stored in the JSON file `path`."""
  if not path:
    raise ValueError('configs/from_json.py needs a path: '
                     '--config=configs/from_json.py:RUN_DIR/config.json.')
  return run_record.load(path)
