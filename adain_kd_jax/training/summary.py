"""The summary of a run: `RunSummary`, WORKDIR/summary.json, one key a field.

A finished run (`loop.train`, or a member of a grid) writes it with `write`
(process 0 only); a run whose summary.json exists is finished. Readers
(experiments/finished_runs.py, the report, the sweep) read the JSON. A run
stopped by SIGTERM or Ctrl-C writes none: its loop returns `stopped(...)`.
"""

import dataclasses
import json
import os
from typing import Any, Sequence

import ml_collections

from adain_kd_jax import cli
from adain_kd_jax.training import run_record

SUMMARY_JSON = 'summary.json'
# Keys written only where they apply: absent from summary.json when None.
_OPTIONAL = ('val_accuracy', 'export', 'grid', 'predicted_by')


def device_name() -> str:
  """This run's devices: their kind and count, e.g. 'NVIDIA H200 x1'."""
  import jax  # pylint: disable=g-import-not-at-top
  return f'{jax.devices()[0].device_kind} x{jax.device_count()}'


@dataclasses.dataclass
class RunSummary:
  """What summary.json holds, in its order; over a run that was stopped and
  resumed (each start of the command is a segment) where it says so."""
  model: str  # The student (config.model).
  method: str  # config.method.
  teacher: str  # config.teacher; '' for a method without a teacher.
  dataset: str  # config.dataset.
  seed: int  # config.seed.
  steps: int  # Training steps of the whole run.
  epochs: float  # steps / steps per epoch.
  test_accuracy: float  # On test after the last step.
  best_accuracy: float  # The best evaluation's accuracy on `best_on`.
  best_step: int  # The step of that evaluation.
  best_on: str  # The split the best is chosen on: 'val' (holdout) or 'test'.
  teacher_test_accuracy: float | None  # teacher.json's; None without one.
  skipped_steps: int  # Steps skipped as non-finite (config.skip_nonfinite).
  # Training images per second over all segments (each segment's first
  # call, which compiles, and evaluations left out); None if none trained.
  images_per_sec: float | None
  # This segment's wall time, from its start to the summary.
  wall_seconds: float
  # Every segment's wall time: the earlier ones up to the checkpoint the
  # next one resumed from (work a killed run did after its last checkpoint
  # is not counted), plus wall_seconds.
  wall_seconds_total: float
  resumes: int  # How many times the run was resumed (0: ran in one go).
  # The fields a resume changed (allowed by naming them in
  # `resume_changes`, see run_record.py): [{field, was, now, at_step}].
  config_changes: list[dict[str, Any]]
  # What trained it, e.g. 'NVIDIA H200 x1' or 'cpu x2' (every process's
  # devices): `campaign --list` estimates pending runs' time from the speed
  # of finished ones on the same device.
  device: str = dataclasses.field(default_factory=device_name)
  val_accuracy: float | None = None  # On val after the last step (holdout).
  export: str | None = None  # WORKDIR/export, with config.export.
  # A grid member's grid: {members, size, layout, shared_teacher,
  # xla_flags} (grid.py).
  grid: dict[str, Any] | None = None
  # What gave the evaluations' logits where it is not the student alone
  # (`Distiller.predicted_by`, from the term that declares
  # `Needs.predicts`); absent for the student.
  predicted_by: str | None = None

  def to_json(self) -> dict[str, Any]:
    """The summary.json record: every key, less the absent optional ones."""
    record = {f.name: getattr(self, f.name)
              for f in dataclasses.fields(self)}
    for key in _OPTIONAL:
      if record[key] is None:
        del record[key]
    return record


def write(workdir: str, summary: RunSummary) -> None:
  """Writes WORKDIR/summary.json atomically."""
  run_record.write_json(os.path.join(workdir, SUMMARY_JSON),
                        summary.to_json())


def finished(workdir: str) -> bool:
  """Whether the run in `workdir` has finished: its summary.json exists."""
  return os.path.exists(os.path.join(workdir, SUMMARY_JSON))


def finished_summary(config, workdir: str, resume_changes: Sequence[str] = ()
                     ) -> dict[str, Any] | None:
  """A finished run's summary.json, printed, if `config` is the one it
  finished under; None otherwise (nothing finished, or a config change the
  run must train for). Nothing is evaluated, counted or written."""
  if not finished(workdir):
    return None
  with cli.user_errors():  # A run of another config: refused, one line.
    changes = run_record.check_resume(workdir, config, resume_changes)
  if changes:
    return None
  with open(os.path.join(workdir, SUMMARY_JSON)) as f:
    done = json.load(f)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    total = done.get('wall_seconds_total', done.get('wall_seconds', 0.0))
    print(f'[{done["method"]}] {done["model"]} on {done["dataset"]}: '
          f'finished before: test accuracy {done["test_accuracy"]:.4f} after '
          f'{done["steps"]} steps ({total:.0f} s in all); best '
          f'{done["best_accuracy"]:.4f} at step {done["best_step"]}. Nothing '
          f'trained ({os.path.join(workdir, SUMMARY_JSON)}).',
          flush=True)
  return done


def stopped(config: ml_collections.ConfigDict, step: int,
            interrupted: bool) -> dict[str, Any]:
  """What a run stopped at `step` returns instead of its summary
  (`interrupted`: whether it was Ctrl-C rather than SIGTERM)."""
  return {'model': config.model, 'method': config.method,
          'preempted_at': step, 'interrupted': interrupted}
