"""SIGTERM (a preemption notice) -> save at the next step and exit cleanly."""

import signal
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np


class PreemptionWatcher:
  """Tells the training loop when to save and stop.

  One process: a SIGTERM handler sets a flag, read at every step. Several
  processes: each host's flag is shared every `sync_every` steps (a small
  all-gather), so that all hosts stop at the same step, as a collective
  checkpoint needs.
  """

  def __init__(self, sync_every: int):
    self._requested = False
    self._sync_every = max(1, sync_every)
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self._requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._requested
    if step % self._sync_every:
      return False
    flags = multihost_utils.process_allgather(np.array(self._requested))
    return bool(np.any(flags))

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
