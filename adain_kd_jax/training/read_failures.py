"""What orbax's failed reads leave behind, sent to the debug log.

A checkpoint or export that fails to restore (checkpoints.py) is one line to
the user; the noise of the failed read itself goes to the debug log
(--verbosity=1) instead of stderr.
"""

import contextlib
import gc
import logging as logging_std
import sys
import traceback
from typing import Iterator

from absl import logging


class _ToDebug(logging_std.Filter):
  """Re-logs the asyncio logger's records at debug level (see below)."""

  def filter(self, record):
    logging.debug('Logged by asyncio while restoring a checkpoint: %s%s',
                  record.getMessage(),
                  ''.join(traceback.format_exception(*record.exc_info))
                  if record.exc_info else '')
    return False


@contextlib.contextmanager
def to_debug_log() -> Iterator[None]:
  """Sends what orbax's failed reads leave behind to the debug log.

  A failed read leaves orbax's asyncio machinery half torn down: TensorStore
  callbacks meet a closed event loop, tasks' exceptions are never retrieved,
  coroutines are never awaited. Python reports each (an unraisable
  exception, or an ERROR of the `asyncio` logger), when it happens or when
  the object is collected, with a traceback on stderr: hundreds of lines next
  to the one line that says what happened. Here they go to the debug log.
  """
  previous = sys.unraisablehook
  asyncio_logger = logging_std.getLogger('asyncio')
  to_debug = _ToDebug()

  def hook(unraisable):
    logging.debug('Ignored while restoring a checkpoint: %s',
                  ''.join(traceback.format_exception(
                      unraisable.exc_type, unraisable.exc_value,
                      unraisable.exc_traceback)))

  sys.unraisablehook = hook
  asyncio_logger.addFilter(to_debug)
  try:
    yield
  finally:
    gc.collect()  # What the failed reads left, reported while hooked.
    asyncio_logger.removeFilter(to_debug)
    sys.unraisablehook = previous
