"""WORKDIR/config.json: the config a run trains, and the check on resume.

Every run writes its resolved config to `WORKDIR/config.json` when it starts
(atomically: a temporary file, then a rename). A run that finds progress in
its workdir (checkpoints or a summary.json) compares its config with the
recorded one first, and refuses to resume when a field that changes the
result differs: one line naming each field with both values and the fix,
and nothing in the workdir changed. So a result can never be relabelled by
re-running another config in the same directory.

Three kinds of fields:
  * `NEUTRAL`: how a run is fed, logged, checkpointed or followed up; they
    may differ freely on resume (the recorded config is updated).
  * `CHANGEABLE`: the training length, the evaluation cadence and the
    non-finite policy. A user may change them on resume by naming them
    (train.py --resume_change=num_epochs); each change is kept in the
    checkpoints' meta and listed in summary.json (`config_changes`).
  * every other field (model, method, data, loss weights, optimiser, seed,
    ...): a resume with another value is refused.

Read back (`load`, `from_dict`), lists come back as tuples, and a recording
made before a field existed gets the value that reproduces what that run did
(`OLDER_RUNS`), so an older run resumes, re-runs and is reported under its
own config, never under a newer default. Imports no JAX.
"""

import json
import os
from typing import Any, Iterable, Sequence

import ml_collections

CONFIG_JSON = 'config.json'
# Fields that never change what the run computes.
NEUTRAL = frozenset({
    'data_dir', 'download', 'num_workers', 'decode_in_workers',
    'device_data', 'steps_per_call', 'eval_batch_size', 'log_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'compare_to', 'export'})
# Fields a resume may change when named (--resume_change); recorded.
CHANGEABLE = frozenset({'num_epochs', 'num_train_steps', 'eval_every_epochs',
                        'skip_nonfinite'})
_MISSING = '<not recorded>'


def config_dict(config) -> dict[str, Any]:
  """A ConfigDict as plain JSON data (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def has_progress(workdir: str) -> bool:
  """Whether `workdir` holds a committed checkpoint or a summary.json."""
  if os.path.isfile(os.path.join(workdir, 'summary.json')):
    return True
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(ckpt_dir) and any(
      name.isdigit() for name in os.listdir(ckpt_dir))


def read(workdir: str) -> dict[str, Any] | None:
  """WORKDIR/config.json as a dict (None if there is none or it is not JSON)."""
  path = os.path.join(workdir, CONFIG_JSON)
  try:
    with open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError):
    return None
  return recorded if isinstance(recorded, dict) else None


# Fields added since runs were first recorded: the value under which an older
# run's recording means what it meant then (a callable reads the recording).
OLDER_RUNS = {
    'holdout_seed': -1,  # The split followed the run's own seed.
    'train_per_class': 0,
    'connector_relu': False,
    'loss.adain_temperature': lambda c: c['loss']['temperature'],
    'loss.adain_warmup_epochs': 0.0,
    'loss.stat_mean': 0.0,
    'grid_layout': 'loop',  # Grids were loops before the option.
    'image_fit': '',  # Only sets named by path read it.
    # The settings of methods added since (VID; then SP .. SimKD, the first
    # phase): an older run's method reads none of them; their defaults.
    'loss.vid': 1.0, 'vid.eps': 1e-5, 'vid.init_pred_var': 5.0,
    'init_epochs': 30.0, 'init_learning_rate': 0.0,
    'loss.sp': 3000.0, 'loss.cc': 0.02, 'loss.rkd': 1.0, 'loss.pkt': 30000.0,
    'loss.nst': 50.0, 'loss.ab': 0.0, 'loss.ft': 200.0, 'loss.fsp': 0.0,
    'loss.kdsvd': 1.0, 'loss.ofd': 0.001, 'loss.reviewkd': 1.0,
    'loss.dist': 2.0, 'loss.srrl': 1.0, 'loss.simkd': 1.0,
    'cc.dim': 128, 'rkd.distance_weight': 25.0, 'rkd.angle_weight': 50.0,
    'dist.beta': 1.0, 'dist.gamma': 1.0, 'dist.temperature': 4.0,
    'reviewkd.warmup_epochs': 20.0, 'simkd.factor': 2,
}


def fill_older(recorded: dict[str, Any]) -> dict[str, Any]:
  """`recorded` with the fields it predates set as `OLDER_RUNS` says."""
  out = {k: dict(v) if isinstance(v, dict) else v
         for k, v in recorded.items()}
  for field, value in OLDER_RUNS.items():
    *parents, leaf = field.split('.')
    node = out
    for part in parents:  # A group added since (e.g. 'cc') is made too,
      if part not in node and callable(value):  # not for a derived value.
        break
      node = node.setdefault(part, {})
    else:
      if leaf not in node:
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


def _flat(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differences(recorded: dict[str, Any], current: dict[str, Any]
                ) -> list[tuple[str, Any, Any]]:
  """[(field, recorded value, current value)] of the non-neutral fields."""
  old, new = _flat(fill_older(recorded)), _flat(current)
  return [(k, old.get(k, _MISSING), new.get(k, _MISSING))
          for k in sorted(set(old) | set(new))
          if k not in NEUTRAL and old.get(k, _MISSING) != new.get(k, _MISSING)]


def _show(value: Any) -> str:
  return value if value == _MISSING else json.dumps(value)


def check_resume(workdir: str, config, allowed: Iterable[str] = ()
                 ) -> list[dict[str, Any]]:
  """The allowed config changes of a resume in `workdir`; raises if refused.

  Args:
    workdir: the run directory.
    config: the ConfigDict about to train there.
    allowed: fields of `CHANGEABLE` the user allows to change.

  Returns:
    [{'field', 'was', 'now'}] of the allowed fields that changed ([] for a
    new run, an identical config or a workdir with no recorded config).

  Raises:
    ValueError: another field differs, or `allowed` names a field that is
      not in `CHANGEABLE`. Nothing is written.
  """
  allowed = set(allowed)
  not_changeable = sorted(allowed - CHANGEABLE)
  if not_changeable:
    raise ValueError(
        f'--resume_change={",".join(not_changeable)}: only '
        f'{", ".join(sorted(CHANGEABLE))} may change on resume; start a new '
        '--workdir to change anything else.')
  if not has_progress(workdir):
    return []
  recorded = read(workdir)
  if recorded is None:  # A run from before config.json was written.
    return []
  diffs = differences(recorded, config_dict(config))
  refused = [d for d in diffs if d[0] not in allowed]
  if refused:
    fields = '; '.join(f'{k}: {_show(was)} there, {_show(now)} now'
                       for k, was, now in refused)
    names = ','.join(k for k, _, _ in refused)
    fix = (', or resume the recorded one with --config=configs/from_json.py:'
           f'{os.path.join(workdir, CONFIG_JSON)}')
    if all(k in CHANGEABLE for k, _, _ in refused):
      fix = f', allow the change with --resume_change={names}' + fix
    raise ValueError(
        f'--workdir={workdir} holds a run of another config ({fields}); '
        f'nothing was changed. Use a new --workdir for this config{fix}.')
  return [{'field': k, 'was': was, 'now': now} for k, was, now in diffs]


def one_run(config: ml_collections.ConfigDict,
            **fields: Any) -> ml_collections.ConfigDict:
  """A copy of `config` for one run: `fields` set (e.g. method, seed) and
  no follow-up comparison run (`compare_to=''`); `config` is unchanged."""
  config = ml_collections.ConfigDict(config.to_dict())
  for field, value in fields.items():
    config[field] = value
  config.compare_to = ''
  return config


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically: a temporary file beside it, then a
  rename, so a reader (or a killed writer) never sees half a file. Its
  folder is made if it is missing (a report's --out=new/folder/x.json)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, record: Any) -> None:
  """Writes `record` as indented JSON to `path` atomically (`write_text`)."""
  write_text(path, json.dumps(record, indent=2) + '\n')


def write(workdir: str, config) -> str:
  """Writes WORKDIR/config.json atomically; returns its path."""
  path = os.path.join(workdir, CONFIG_JSON)
  write_text(path, config.to_json_best_effort(indent=2) + '\n')
  return path


def check_and_write(workdir: str, config,
                    allowed: Sequence[str] = ()) -> list[dict[str, Any]]:
  """`check_resume`, then `write` (only if the check passed)."""
  changes = check_resume(workdir, config, allowed)
  write(workdir, config)
  return changes
