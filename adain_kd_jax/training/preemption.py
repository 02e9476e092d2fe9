"""SIGTERM (a preemption notice), the extra stop signal or Ctrl-C -> save at
the next step and exit.

The first SIGTERM or SIGINT (Ctrl-C) asks the training loop to save a
checkpoint at the next step boundary and stop; the run resumes from it with
the same command. A second SIGINT aborts at once (KeyboardInterrupt), without
that save; the newest checkpoint written before stays intact.

The extra stop signal, SIGUSR1 unless ADAIN_KD_STOP_SIGNAL names another
(`USR2`, `SIGHUP`, ...; `none`: no extra signal), acts as SIGTERM does:
SLURM's warning before a job's time limit (`sbatch --signal=USR1@120`) is
usually SIGUSR1.

Imports no JAX at module level, so that the SLURM submission (which writes
the signal into its job scripts) stays free of it.
"""

import os
import signal
import threading

import numpy as np

STOP_SIGNAL_ENV = 'ADAIN_KD_STOP_SIGNAL'


def extra_stop_signal() -> signal.Signals | None:
  """The extra stop signal (ADAIN_KD_STOP_SIGNAL, default SIGUSR1), or None."""
  name = os.environ.get(STOP_SIGNAL_ENV, 'USR1').strip().upper()
  if name in ('', 'NONE'):
    return None
  try:
    return signal.Signals[name if name.startswith('SIG') else 'SIG' + name]
  except KeyError:
    raise ValueError(
        f'{STOP_SIGNAL_ENV}={name!r} names no signal; use e.g. USR1, USR2 or '
        'none.') from None


def stop_signals() -> tuple[signal.Signals, ...]:
  """SIGTERM, SIGINT and the extra stop signal (if any)."""
  extra = extra_stop_signal()
  return (signal.SIGTERM, signal.SIGINT) + (
      (extra,) if extra not in (None, signal.SIGTERM, signal.SIGINT) else ())


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
      for signum in stop_signals():
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
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_count() == 1:
      return self._requested
    if step % self._sync_every:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array(self._requested))
    return bool(np.any(flags))

  def close(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
