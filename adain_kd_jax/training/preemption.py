"""SIGTERM (a preemption notice) or Ctrl-C -> save at the next step and exit.

The first SIGTERM or SIGINT (Ctrl-C) asks the training loop to save a
checkpoint at the next step boundary and stop; the run resumes from it with
the same command. A second SIGINT aborts at once (KeyboardInterrupt), without
that save; the newest checkpoint written before stays intact.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionWatcher:
  """Tells the training loop when to save and stop.

  One process: a SIGTERM / SIGINT handler sets a flag, read at every step.
  Several processes: each host's flag is shared every `sync_every` steps (a
  small all-gather), so that all hosts stop at the same step, as a collective
  checkpoint needs.
  """

  def __init__(self, sync_every: int):
    self._requested = False
    self.interrupted = False  # Whether a Ctrl-C (SIGINT) arrived here.
    self._sync_every = max(1, sync_every)
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      for signum in _SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      if self.interrupted:
        raise KeyboardInterrupt(
            'aborted by a second Ctrl-C, without saving; the newest '
            'checkpoint written before is intact: run the same command to '
            'resume.')
      self.interrupted = True
    self._requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self._requested
    if step % self._sync_every:
      return False
    flags = multihost_utils.process_allgather(np.array(self._requested))
    return bool(np.any(flags))

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
