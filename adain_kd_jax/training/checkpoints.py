"""Orbax checkpoints: a run's training state, and exported teachers.

Run checkpoints (`WORKDIR/checkpoints/<step>/`) hold the whole student
`TrainState` (params, batch stats, optimizer state, step) plus a small JSON
`meta` (best accuracy so far, ...). They are written asynchronously by orbax,
which commits a step atomically (temporary directory, then rename), so a
killed run never leaves a half-written step that looks complete. Resume order:
the newest complete step is restored; the data position and every random key
follow from its `step`.

A teacher export (`DIR/teacher.json` + `DIR/variables/<step>/`) holds only the
frozen network's `params` and `batch_stats`, never optimizer state. The JSON
records what the teacher is (model, classes, data set, input shape), how it
was trained and its test accuracy, and a SHA-256 of every file under
`variables/`, checked on load.
"""

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from adain_kd_jax import cli
from adain_kd_jax.training import read_failures
from adain_kd_jax.training import run_record

TEACHER_JSON = 'teacher.json'
# Top-level keys of a train state that older versions saved under another
# name: {old: today's}. Restoring such a step reads it under the old name.
RENAMED_KEYS = {'aux': 'term_state'}
_VARIABLES = 'variables'


def barrier_prefix(directory: str) -> str:
  """The prefix of the multi-process barriers of `directory`'s manager.

  Orbax names a save's barriers after its step alone, so two managers in one
  process that save the same step at once (the run's last checkpoint and its
  export, or the members of a grid) would meet at one barrier and fail; a
  prefix from the directory keeps them apart, and is the same on every host.
  """
  digest = hashlib.sha256(os.path.abspath(directory).encode()).hexdigest()
  return f'ckpt_{digest[:16]}'


def _manager(directory, *, keep=None):
  """A CheckpointManager; its items' handlers follow from the `ocp.args`."""
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
          # Leftovers of a save that a killed run did not finish.
          cleanup_tmp_directories=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=barrier_prefix(directory))))


class RunCheckpointer:
  """Saves and restores a run's TrainState (with a JSON meta dict)."""

  def __init__(self, directory: str, keep: int):
    self.directory = directory
    self._mngr = _manager(directory, keep=keep)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def delete_after(self, step: int) -> None:
    """Deletes every saved step after `step` (a run rolled back to it)."""
    for later in [s for s in self._mngr.all_steps() if s > step]:
      self._mngr.delete(later)

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts an asynchronous save of `state` at `step` (skips duplicates).

    A full disk (here or in an earlier save still being written) is one
    OSError saying which step is saved and how to resume (`_disk_full`).
    """
    if step in self._mngr.all_steps():
      return
    with self._disk_full(step):
      self._mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                      force=True)

  def restore(self, abstract_state: Any, at_most: int | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores the newest readable step (<= `at_most` if given) onto
    `abstract_state`.

    A step that fails to restore (truncated or corrupted files) is deleted
    and the step before it is tried; once one restores, each skipped step
    is reported in one line (the details, and the tracebacks orbax's failed
    reads leave behind, go to the debug log: --verbosity=1). A step whose
    recorded arrays are not those of `abstract_state` (written with another
    model or method) is an error that leaves every checkpoint in place. A
    step that recorded a field under its older name (`RENAMED_KEYS`) is read
    under that name.
    """
    expected = _shapes(jax.tree.leaves(abstract_state))
    skipped = []
    with read_failures.to_debug_log():
      for step in sorted(self._mngr.all_steps(), reverse=True):
        if at_most is not None and step > at_most:
          continue
        saved = self._saved_shapes(step)
        if saved is not None and saved != expected:
          raise ValueError(
              f'The checkpoints in {self.directory} were written by another '
              f'configuration (step {step} holds {len(saved)} arrays of other '
              f'shapes than the {len(expected)} this config trains); nothing '
              'was changed. Use another --workdir, or run the config that '
              'wrote them.')
        old_names = self._old_names(step, abstract_state)
        try:
          out = self._mngr.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(
                  _under_names(abstract_state, old_names)),
              meta=ocp.args.JsonRestore()))
        except Exception as e:  # pylint: disable=broad-except
          logging.debug('Checkpoint step %d in %s is unreadable; deleting it.',
                        step, self.directory, exc_info=True)
          skipped.append((step, _why(e)))
          self._mngr.delete(step)
          continue
        for bad, why in skipped:
          print(f'Checkpoint step {bad} in {self.directory} is corrupted or '
                f'incomplete ({why}); deleted it and resumed from step '
                f'{step}.', flush=True)
        state = out.state
        if old_names:
          state = abstract_state.replace(**{
              f: state[old_names.get(f, f)] for f in _fields(abstract_state)})
        return state, out.meta
    raise ValueError(
        f'No readable checkpoint in {self.directory} (steps '
        f'{", ".join(str(s) for s, _ in skipped)} failed to restore); move it '
        'away to start the run afresh.')

  def _saved_tree(self, step: int) -> Any:
    """The metadata tree recorded at `step` (None if unreadable)."""
    # The item's own handler: the manager's item_metadata warns about every
    # item it has no handler for yet (before the first save or restore).
    path = epath.Path(os.path.abspath(self.directory)) / str(step) / 'state'
    try:
      return ocp.StandardCheckpointHandler().metadata(path).tree
    except Exception:  # pylint: disable=broad-except
      return None  # Unreadable metadata: a corrupted step, handled below.

  def _saved_shapes(self, step: int) -> list[tuple[int, ...]] | None:
    """The shapes of the arrays recorded at `step` (None if unreadable)."""
    tree = self._saved_tree(step)
    if tree is None:
      return None
    return _shapes(jax.tree.leaves(
        tree, is_leaf=lambda x: hasattr(x, 'shape')))

  def _old_names(self, step: int, abstract_state: Any) -> dict[str, str]:
    """{field: the key step's record has it under} for the fields of a
    state dataclass that an older version saved under another name
    (`RENAMED_KEYS`); empty when the names are today's."""
    tree = self._saved_tree(step)
    if not isinstance(tree, dict) or not dataclasses.is_dataclass(
        abstract_state):
      return {}
    return {new: old for old, new in RENAMED_KEYS.items()
            if old in tree and new not in tree
            and new in _fields(abstract_state)}

  def wait(self) -> None:
    with self._disk_full(None):
      self._mngr.wait_until_finished()

  @contextlib.contextmanager
  def _disk_full(self, step: int | None):
    """Turns a full disk (ENOSPC anywhere in the error's chain) into one
    OSError naming the newest complete step and the way to resume."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if not any(isinstance(x, OSError) and x.errno == errno.ENOSPC
                 for x in cli.exception_chain(e)):
        raise
      saved = [s for s in self._mngr.all_steps() if s != step]
      kept = (f'step {max(saved)} is saved' if saved
              else 'no step is saved yet')
      with cli.user_errors():  # One line, exit status 2.
        raise OSError(errno.ENOSPC, (
            f'The disk of {self.directory} is full'
            + (f' (saving step {step})' if step is not None else '')
            + f': {kept}; free some space and run the same command again '
            'to resume.')) from e

  def close(self) -> None:
    self._mngr.close()


def _why(error: BaseException) -> str:
  """The gist of a failed restore: the type and the start of the message."""
  text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text[:80]}' + ('...' if len(text) > 80
                                                   else '')


def _fields(state: Any) -> list[str]:
  return [f.name for f in dataclasses.fields(state)]


def _under_names(abstract_state: Any, old_names: dict[str, str]) -> Any:
  """`abstract_state`, or (with `old_names`) its fields as a dict under the
  names an older checkpoint recorded them, for orbax to match by key."""
  if not old_names:
    return abstract_state
  return {old_names.get(f, f): getattr(abstract_state, f)
          for f in _fields(abstract_state)}


def _shapes(leaves) -> list[tuple[int, ...]]:
  return sorted(tuple(int(d) for d in x.shape) for x in leaves)


def _file_hashes(directory: str) -> dict[str, str]:
  hashes = {}
  for root, _, files in os.walk(directory):
    for name in sorted(files):
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      hashes[os.path.relpath(path, directory)] = digest
  return dict(sorted(hashes.items()))


def save_teacher(directory: str, variables: Any, meta: dict[str, Any],
                 step: int) -> None:
  """Exports `{'params', 'batch_stats'}` and `teacher.json` to `directory`."""
  var_dir = os.path.join(directory, _VARIABLES)
  mngr = _manager(var_dir, keep=1)
  mngr.save(step, args=ocp.args.Composite(
      variables=ocp.args.StandardSave(variables)), force=True)
  mngr.wait_until_finished()
  mngr.close()
  if jax.process_index() == 0:
    meta = dict(meta, step=step, sha256=_file_hashes(var_dir))
    run_record.write_json(os.path.join(directory, TEACHER_JSON), meta)


def read_teacher_meta(directory: str) -> dict[str, Any]:
  """Reads `teacher.json`, with a clear error when it is not a teacher."""
  path = os.path.join(directory, TEACHER_JSON)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'No teacher checkpoint at {directory!r} (no {TEACHER_JSON}). Set '
        'config.teacher_checkpoint to the export directory of a teacher run '
        '(train with configs/teacher.py; it writes WORKDIR/export).')
  with open(path) as f:
    return json.load(f)


def load_teacher(directory: str, *, model: str, num_classes: int,
                 abstract_variables: Any) -> tuple[Any, dict[str, Any]]:
  """Loads and validates an exported teacher.

  Args:
    directory: the export directory (holds teacher.json).
    model: the architecture the config expects (config.teacher).
    num_classes: the class count of the config's data set.
    abstract_variables: jax.ShapeDtypeStruct tree (with shardings) of the
      expected `{'params', 'batch_stats'}`.

  Returns:
    (variables, meta).

  Raises:
    ValueError: the checkpoint is of another model, class count or shapes,
      or its files do not match their recorded checksums.
  """
  meta = read_teacher_meta(directory)
  where = f'teacher checkpoint {directory!r}'
  if meta.get('model') != model:
    raise ValueError(
        f'The {where} is a {meta.get("model")!r} but config.teacher is '
        f'{model!r}: set --config.teacher={meta.get("model")} or point '
        f'config.teacher_checkpoint at a {model} checkpoint.')
  if meta.get('num_classes') != num_classes:
    raise ValueError(
        f'The {where} has {meta.get("num_classes")} classes but the data set '
        f'has {num_classes}: train a teacher on this data set '
        f'(config.dataset) or choose the matching data set.')
  var_dir = os.path.join(directory, _VARIABLES)
  if 'sha256' in meta and _file_hashes(var_dir) != meta['sha256']:
    found = _file_hashes(var_dir)
    bad = sorted(k for k in set(meta['sha256']) | set(found)
                 if meta['sha256'].get(k) != found.get(k))
    raise ValueError(
        f'The {where} is corrupted: {len(bad)} file(s) differ from the '
        f'checksums in {TEACHER_JSON} (e.g. {bad[0]}). Re-export or re-fetch '
        'the teacher.')
  # Read with a plain checkpointer: a CheckpointManager would want to write
  # (or warn that it may not) in a directory that is only read here.
  path = _latest_item(var_dir, 'variables')
  if path is None:
    raise FileNotFoundError(f'The {where} has no saved variables in '
                            f'{var_dir!r}; re-export the teacher.')
  handler = ocp.StandardCheckpointHandler()
  _check_shapes(handler.metadata(epath.Path(path)), abstract_variables, where,
                model)
  checkpointer = ocp.Checkpointer(handler)
  try:
    variables = checkpointer.restore(
        path, args=ocp.args.StandardRestore(abstract_variables))
  finally:
    checkpointer.close()
  return variables, meta


def _latest_item(directory: str, item: str) -> str | None:
  """DIR/<newest step>/<item> of a CheckpointManager directory, if any.

  Only committed steps count: orbax writes a step under a temporary name and
  renames it to the bare number when it is complete.
  """
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()
           and os.path.isdir(os.path.join(directory, name, item))
           ] if os.path.isdir(directory) else []
  if not steps:
    return None
  return os.path.abspath(os.path.join(directory, str(max(steps)), item))


def _check_shapes(stored, expected, where, model):
  """Raises a ValueError naming the first variable whose shape differs."""
  flat_stored = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in
                 jax.tree_util.tree_flatten_with_path(stored)[0]}
  flat_expected = {jax.tree_util.keystr(p): tuple(v.shape) for p, v in
                   jax.tree_util.tree_flatten_with_path(expected)[0]}
  missing = sorted(set(flat_expected) - set(flat_stored))
  extra = sorted(set(flat_stored) - set(flat_expected))
  if missing or extra:
    raise ValueError(
        f'The {where} does not match a {model}: '
        f'{len(missing)} variable(s) missing (e.g. {missing[:1]}), '
        f'{len(extra)} unexpected (e.g. {extra[:1]}). Is it of another '
        'architecture?')
  for key, shape in flat_expected.items():
    if flat_stored[key] != shape:
      raise ValueError(
          f'The {where} does not match a {model}: variable {key} has shape '
          f'{flat_stored[key]} in the checkpoint but the model expects '
          f'{shape} (another input size, width or class count?).')
