"""Training progress on stderr: a tqdm bar on a terminal, lines in a log.

On a terminal the bar redraws itself in place (carriage returns). Written to
a file or a pipe (a batch job's log, `train.py ... 2> log`), that would be one
line of thousands of carriage returns, so there a line is printed every
`every` steps and at the end instead: method:model, the step, the percentage,
the speed, the time left and the latest postfix (the test accuracy).
"""

import sys
import time
from typing import Any, TextIO

import tqdm

# The bar until the first call has run (compiling): no ETA yet.
_COMPILING_BAR = '{l_bar}{bar}| {n_fmt}/{total_fmt} [compiling...]'


class LineProgress:
  """tqdm's update / set_postfix / close, printing a line every N steps.

  A line falls due when an update crosses a multiple of `every` (or reaches
  the total) and is printed at the next call, so that it carries what the
  loop learnt at that step (set_postfix: the evaluation).
  """

  def __init__(self, *, total: int, initial: int, desc: str, every: int,
               disable: bool = False, file: TextIO | None = None):
    self.total, self.n, self.desc = total, initial, desc
    self.every, self.disable = max(1, every), disable
    self.file = file
    self.postfix = ''
    self._start, self._start_n = time.time(), initial
    self._printed = initial
    self._due = None  # (step, time) of a line not printed yet.

  def update(self, k: int) -> None:
    self._flush()
    before, self.n = self.n, self.n + k
    if self.n // self.every > before // self.every or (
        self.n >= self.total > before):
      self._due = (self.n, time.time())

  def set_postfix(self, **values: Any) -> None:
    self.postfix = ', '.join(f'{k}={v}' for k, v in values.items())

  def close(self) -> None:
    self._flush()
    if self.n > self._printed:
      self._print(self.n, time.time())

  def _flush(self) -> None:
    if self._due is not None:
      self._print(*self._due)
      self._due = None

  def _print(self, step: int, now: float) -> None:
    self._printed = step
    if self.disable:
      return
    elapsed, done = now - self._start, step - self._start_n
    parts = [f'{self.desc}: step {step}/{self.total} '
             f'({100 * step / max(self.total, 1):.0f}%)']
    if done > 0 and elapsed > 0:
      rate = done / elapsed
      left = int((self.total - step) / rate)
      parts.append(f'{rate:.2f} step/s, '
                   f'{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left')
    if self.postfix:
      parts.append(self.postfix)
    print(', '.join(parts), file=self.file or sys.stderr, flush=True)


def progress(*, total: int, initial: int, desc: str, every: int,
             disable: bool, compiling: bool = False):
  """A tqdm bar on a terminal, else a `LineProgress` (see the docstring).

  `compiling`: the bar shown until the first call has run (no ETA); in a log
  one line says so.
  """
  if not sys.stderr.isatty():
    if compiling and not disable:
      print(f'{desc}: step {initial}/{total}, compiling...', file=sys.stderr,
            flush=True)
    return LineProgress(total=total, initial=initial, desc=desc, every=every,
                        disable=disable or compiling)
  return tqdm.tqdm(total=total, initial=initial, unit='step', disable=disable,
                   mininterval=2.0, desc=desc,
                   bar_format=_COMPILING_BAR if compiling else None,
                   leave=not compiling)
