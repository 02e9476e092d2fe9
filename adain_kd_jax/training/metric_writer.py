"""Where a run's metrics go while it trains: metrics.jsonl and TensorBoard.

Every record (one per logged training step, one per evaluation of a split)
becomes a line of `WORKDIR/metrics.jsonl` and the TensorBoard scalars
`<split>/<field>` at its step, in event files under `WORKDIR/tb` (written
with tensorboardX, no TensorFlow): `train/loss` and every loss term
(`train/ce`, `train/kd`, `train/adain`, ...), `train/lr`, `train/grad_norm`,
`train/accuracy`, `train/images_per_sec`, `test/accuracy`, `test/loss` (and
`val/...` with a held-out split). The events are flushed at every
checkpoint and evaluation, so `tensorboard --logdir WORKDIR` follows a run
as it trains. Only process 0 writes.

A resumed run keeps the records up to the step it resumes from: a killed run
may have logged past its last checkpoint, and those steps are logged again
(identically) after the resume; TensorBoard is told to drop them from the
older event files (tensorboardX's `purge_step`). A run started afresh
replaces both.
"""

import glob
import json
import math
import os
from typing import Any

# Record fields that are not scalars to plot.
NOT_SCALARS = ('step', 'split', 'epoch', 'count')
TB_DIR = 'tb'
EVENT_GLOB = 'events.out.tfevents.*'


def scalars(record: dict[str, Any]) -> dict[str, float]:
  """A record's TensorBoard scalars: {'<split>/<field>': value}.

  Every finite number except the fields in NOT_SCALARS (booleans and None,
  e.g. the first `images_per_sec`, are left out).
  """
  return {f'{record["split"]}/{key}': float(value)
          for key, value in record.items()
          if key not in NOT_SCALARS and not isinstance(value, bool)
          and isinstance(value, (int, float)) and math.isfinite(value)}


class MetricWriter:
  """JSON lines in WORKDIR/metrics.jsonl and live events in WORKDIR/tb."""

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True,
               flush_secs: int = 10):
    """Opens the writers.

    Args:
      workdir: the run directory.
      resume_step: the step the run resumes from (0: a fresh run).
      enabled: False on every process but 0.
      flush_secs: the longest time events wait in memory.
    """
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    if resume_step and os.path.exists(self.path):
      with open(self.path) as f:
        kept = [l for l in f if json.loads(l)['step'] <= resume_step]
      with open(self.path, 'w') as f:
        f.writelines(kept)
    elif not resume_step and os.path.exists(self.path):
      os.remove(self.path)
    logdir = os.path.join(workdir, TB_DIR)
    if not resume_step:
      for old in glob.glob(os.path.join(logdir, EVENT_GLOB)):
        os.remove(old)
    # pylint: disable-next=g-import-not-at-top
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(
        logdir=logdir, flush_secs=flush_secs,
        purge_step=resume_step + 1 if resume_step else None)

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for tag, value in scalars(record).items():
      self._tb.add_scalar(tag, value, global_step=record['step'])

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
