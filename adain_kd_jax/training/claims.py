"""A run is trained by one trainer at a time: its claim file, RUN_DIR/claim.json.

Whoever trains a run (train.py, a grid member, a campaign's or sweep's child)
first takes its claim: `acquire(run_dir)` creates RUN_DIR/claim.json naming
the host, the process id and the SLURM job (if any). While the run trains, a
daemon thread refreshes the file's modification time every `HEARTBEAT_S`;
`release()` removes it at the end. A second trainer gets `Claimed`, whose
message (one line) names the holder; train.py prints it and exits with
status 2 without touching the run, a campaign trains something else.

A claim is stale, and the next trainer takes it over, when its holder has not
refreshed it for `stale_after_s()` seconds (ADAIN_KD_CLAIM_STALE_S, default
600), or at once when its holder ran on this host and that process is gone
(a run killed with SIGKILL can be restarted straight away). By hand: delete
RUN_DIR/claim.json once its holder is known to be gone.

On a shared file system: the claim is written to a unique temporary file and
linked to claim.json with `os.link`, which fails if claim.json exists. A hard
link is atomic on local POSIX file systems and on NFS (v2 and later, unlike
O_EXCL on NFSv2); a stale claim is replaced under a second lock taken the
same way (claim.json.takeover). Staleness compares the file's modification
time with this host's clock, so hosts' clocks must agree to well within the
stale time (NTP), and the file system must not cache attributes for longer
than that (NFS's actimeo defaults to at most 60 s).

A campaign that starts a child for a run takes the claim itself and hands it
to the child in the environment (`TOKEN_ENV`): the child adopts the claim
whose token it was given; the parent refreshes and releases it.
"""

import json
import os
import socket
import threading
import time
import uuid

CLAIM_FILE = 'claim.json'
TOKEN_ENV = 'ADAIN_KD_CLAIM_TOKEN'
STALE_ENV = 'ADAIN_KD_CLAIM_STALE_S'
DEFAULT_STALE_S = 600.0
HEARTBEAT_S = 30.0


class Claimed(ValueError):
  """The run is claimed by a live trainer elsewhere (the message names it)."""


def stale_after_s() -> float:
  """Seconds without a refresh after which a claim is stale."""
  value = os.environ.get(STALE_ENV, '')
  try:
    return float(value) if value else DEFAULT_STALE_S
  except ValueError:
    raise ValueError(f'{STALE_ENV}={value!r} is not a number of seconds; '
                     f'unset it (default {DEFAULT_STALE_S:.0f}) or set e.g. '
                     f'{STALE_ENV}=600.') from None


def slurm_job() -> str:
  """This process's SLURM job ('1234', '1234_5' for an array task) or ''."""
  array_job = os.environ.get('SLURM_ARRAY_JOB_ID')
  if array_job:
    return f'{array_job}_{os.environ.get("SLURM_ARRAY_TASK_ID", "")}'
  return os.environ.get('SLURM_JOB_ID', '')


def path_of(run_dir: str) -> str:
  return os.path.join(run_dir, CLAIM_FILE)


def read(run_dir: str) -> dict | None:
  """The claim's record plus 'age_s' (since its last refresh), or None."""
  path = path_of(run_dir)
  try:
    with open(path) as f:
      record = json.load(f)
    record['age_s'] = time.time() - os.stat(path).st_mtime
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  return record


def _holder_gone(record: dict) -> bool:
  """Whether the holder ran on this host and its process no longer exists."""
  if record.get('host') != socket.gethostname():
    return False
  try:
    os.kill(int(record['pid']), 0)
  except ProcessLookupError:
    return True
  except (PermissionError, KeyError, ValueError, TypeError):
    return False
  return False


def is_stale(record: dict, stale_s: float | None = None) -> bool:
  stale_s = stale_after_s() if stale_s is None else stale_s
  return record['age_s'] > stale_s or _holder_gone(record)


def describe(record: dict) -> str:
  """'pid P on HOST (SLURM job J), refreshed N s ago'."""
  job = f' (SLURM job {record["slurm_job"]})' if record.get('slurm_job') \
      else ''
  return (f'pid {record.get("pid")} on {record.get("host")}{job}, refreshed '
          f'{record["age_s"]:.0f} s ago')


def holder(run_dir: str, stale_s: float | None = None) -> str | None:
  """`describe` of a live claim on run_dir, or None (no claim, or stale).

  A claim handed to this process (`TOKEN_ENV`) counts as no claim.
  """
  record = read(run_dir)
  if record is None or is_stale(record, stale_s):
    return None
  if record.get('token') and record['token'] == os.environ.get(TOKEN_ENV):
    return None
  return describe(record)


def _link_new(target: str, record: dict) -> bool:
  """Writes `record` to a unique file, links it to `target`; False if
  `target` exists."""
  tmp = f'{target}.{record["token"]}.tmp'
  with open(tmp, 'w') as f:
    json.dump(record, f)
  try:
    os.link(tmp, target)
    return True
  except FileExistsError:
    return False
  finally:
    os.unlink(tmp)


class Claim:
  """A held claim: refreshed by a daemon thread until `release()`."""

  def __init__(self, run_dir: str, record: dict, owned: bool,
               heartbeat_s: float):
    self.run_dir = run_dir
    self.record = record
    self.owned = owned  # False: adopted from a parent, who refreshes it.
    self.lost = False  # Someone else replaced it (we failed to refresh).
    self._stop = threading.Event()
    self._thread = None
    if owned:
      self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,),
                                      daemon=True, name='claim-heartbeat')
      self._thread.start()

  def _ours(self) -> bool:
    current = read(self.run_dir)
    return current is not None and current.get('token') == \
        self.record['token']

  def refresh(self) -> bool:
    """Touches the claim; False (and `lost`) if it is no longer ours."""
    if not self._ours():
      self.lost = True
      return False
    os.utime(path_of(self.run_dir))
    return True

  def _beat(self, every: float) -> None:
    while not self._stop.wait(every):
      try:
        if not self.refresh():
          return
      except OSError:
        pass  # A file-system hiccup: try again at the next beat.

  def release(self) -> None:
    """Stops refreshing and removes the claim (if still ours and owned)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self.owned and self._ours():
      try:
        os.unlink(path_of(self.run_dir))
      except FileNotFoundError:
        pass
    self.owned = False


def acquire(run_dir: str, stale_s: float | None = None,
            heartbeat_s: float = HEARTBEAT_S) -> Claim:
  """Claims `run_dir` (created if missing); raises `Claimed` if a live
  trainer holds it. A stale claim is taken over."""
  stale_s = stale_after_s() if stale_s is None else stale_s
  os.makedirs(run_dir, exist_ok=True)
  target = path_of(run_dir)
  token = os.environ.get(TOKEN_ENV)
  current = read(run_dir)
  if token and current is not None and current.get('token') == token:
    return Claim(run_dir, current, owned=False, heartbeat_s=heartbeat_s)
  record = {'host': socket.gethostname(), 'pid': os.getpid(),
            'slurm_job': slurm_job(), 'token': uuid.uuid4().hex,
            'claimed_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
  for _ in range(3):  # A claim released or replaced under us: look again.
    if _link_new(target, record):
      return Claim(run_dir, record, owned=True, heartbeat_s=heartbeat_s)
    current = read(run_dir)
    if current is None:
      continue
    if not is_stale(current, stale_s):
      break
    if _take_over(run_dir, current, record, stale_s):
      return Claim(run_dir, record, owned=True, heartbeat_s=heartbeat_s)
  current = read(run_dir)
  who = describe(current) if current else 'another trainer'
  raise Claimed(
      f'{run_dir} is claimed by {who} (stale after {stale_s:.0f} s without '
      f'a refresh): it is being trained there; train another run, or if '
      f'that process is gone delete {target}.')


def _take_over(run_dir: str, stale: dict, record: dict,
               stale_s: float) -> bool:
  """Replaces the `stale` claim by `record` under the takeover lock."""
  lock = path_of(run_dir) + '.takeover'
  if not _link_new(lock, dict(record, purpose='takeover')):
    try:  # A taker that died while holding the lock.
      if time.time() - os.stat(lock).st_mtime > stale_s:
        os.unlink(lock)
    except FileNotFoundError:
      pass
    return False
  try:
    current = read(run_dir)
    if (current is None or current.get('token') != stale.get('token')
        or not is_stale(current, stale_s)):
      return False  # Released, refreshed or replaced since we looked.
    tmp = f'{path_of(run_dir)}.{record["token"]}.tmp'
    with open(tmp, 'w') as f:
      json.dump(record, f)
    os.replace(tmp, path_of(run_dir))
    return True
  finally:
    os.unlink(lock)
