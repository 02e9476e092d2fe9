"""The benchmarks' one output: their result as JSON on stdout and, with
--out, in a file (written whole: a temporary file renamed over it)."""

import json
import os
from typing import Any


def emit(result: dict[str, Any], out: str | None, *,
         echo: bool = True) -> None:
  """Prints `result` as indented JSON (unless not `echo`) and writes it to
  `out` when a path is given."""
  text = json.dumps(result, indent=2)
  if echo:
    print(text, flush=True)
  if out:
    tmp = f'{out}.tmp'
    with open(tmp, 'w') as f:
      f.write(text + '\n')
    os.replace(tmp, out)
