"""Checks that run before any work is wasted: the workdir and the disk.

Everything here raises an error that names the problem and the fix, before
anything is compiled or trained, and leaves no half-written workdir behind.
"""

import os
import shutil
import uuid


def prepare_workdir(workdir: str, needed_bytes: int) -> None:
  """Creates `workdir` if it can be written and the disk has room.

  Args:
    workdir: the run directory.
    needed_bytes: an estimate of what the run will write (checkpoints).

  Raises:
    OSError: a file, unwritable, or not enough free space; a directory
      created here is removed again.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise FileExistsError(
        f'--workdir={workdir!r} is an existing file, not a directory; choose '
        'a directory (it is created if missing).')
  existed = os.path.isdir(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_probe_{uuid.uuid4().hex}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise OSError(
        f'Cannot write to --workdir={workdir!r} ({e.strerror or e}); choose a '
        'directory you can write to.') from e
  free = shutil.disk_usage(workdir).free
  if free < needed_bytes:
    if not existed:
      shutil.rmtree(workdir, ignore_errors=True)
    raise OSError(
        f'Only {free / 2**20:.0f} MiB free on the disk of --workdir='
        f'{workdir!r}, but the run needs about {needed_bytes / 2**20:.0f} '
        'MiB for its checkpoints; free some space, lower '
        'config.keep_checkpoints or choose another workdir.')
