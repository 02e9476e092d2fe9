"""Fetches Fashion-MNIST from the Debian package, without root.

  python -m adain_kd_jax.data.fetch [--dest DIR]

Runs `apt-get download dataset-fashion-mnist` (any user may) in a temporary
folder and unpacks the .deb with `dpkg-deb -x` into DIR (default
`~/.cache/adain_kd_jax/fashion-mnist`), where `sources.load(...,
source='idx')` finds it without further configuration. The package is the
only copy of a real image data set reachable from machines that see nothing
but package registries; tfds' own download would need the open internet.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

from adain_kd_jax.data import sources

PACKAGE = 'dataset-fashion-mnist'
SYSTEM_DIR = '/usr/share/datasets/fashion-mnist'


def fetch(dest: str) -> str:
  """Makes sure the Fashion-MNIST IDX files exist; returns their folder.

  Args:
    dest: where to extract the package (its files land in
      `dest/usr/share/datasets/fashion-mnist`).

  Returns:
    The folder holding the four IDX files.

  Raises:
    RuntimeError: apt-get or dpkg-deb is missing or fails.
  """
  if sources.has_idx_files(SYSTEM_DIR):
    print(f'Fashion-MNIST is already installed in {SYSTEM_DIR}; nothing to '
          'do.')
    return SYSTEM_DIR
  target = os.path.join(dest, 'usr', 'share', 'datasets', 'fashion-mnist')
  if sources.has_idx_files(target):
    print(f'Fashion-MNIST is already in {target}; nothing to do.')
    return target

  missing = [tool for tool in ('apt-get', 'dpkg-deb') if not shutil.which(tool)]
  if missing:
    raise RuntimeError(
        f'{" and ".join(missing)} not found: this fetcher needs a Debian or '
        f'Ubuntu system. Alternatives: download the four Fashion-MNIST IDX '
        'files (train/t10k-images-idx3/labels-idx1-ubyte.gz) yourself and '
        'set --config.data_dir to their folder, or use '
        '--config.data_source=tfds --config.download=True (needs network '
        'access and TensorFlow to prepare).')

  with tempfile.TemporaryDirectory() as tmp:
    _run(['apt-get', 'download', PACKAGE], cwd=tmp,
         hint='If apt says it cannot locate the package, its lists may be '
         'stale: run `apt-get update` as root (or `apt-get install '
         f'{PACKAGE}`, which puts the files in {SYSTEM_DIR}).')
    debs = glob.glob(os.path.join(tmp, '*.deb'))
    if len(debs) != 1:
      raise RuntimeError(
          f'apt-get download left {debs} in {tmp}, expected one .deb.')
    os.makedirs(dest, exist_ok=True)
    _run(['dpkg-deb', '-x', debs[0], dest])

  if not sources.has_idx_files(target):
    raise RuntimeError(
        f'{PACKAGE} was extracted into {dest}, but {target} lacks some of '
        f'{list(sources.IDX_STEMS)} (.gz): the package layout changed?')
  print(f'Fashion-MNIST IDX files are in {target}')
  return target


def _run(cmd: list[str], cwd: Optional[str] = None, hint: str = '') -> None:
  """Runs `cmd`, raising a RuntimeError with its output if it fails."""
  result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          check=False)
  if result.returncode != 0:
    raise RuntimeError(
        f'`{" ".join(cmd)}` failed (exit {result.returncode}):\n'
        f'{result.stderr.strip() or result.stdout.strip()}\n{hint}'.strip())


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m adain_kd_jax.data.fetch',
      description='Fetches Fashion-MNIST from the Debian package, without '
      'root.')
  parser.add_argument(
      '--dest', default=sources.default_fetch_dest('fashion_mnist'),
      help='folder to extract the package into (default: %(default)s)')
  args = parser.parse_args(argv)
  try:
    target = fetch(os.path.expanduser(args.dest))
  except RuntimeError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  if (os.path.abspath(target) not in
      map(os.path.abspath, sources.default_idx_dirs('fashion_mnist'))):
    # A custom --dest is not on the default search path.
    print(f'Train with --config.data_dir={target} to use it.')
  return 0


def run():
  """The console script `adain-kd-fetch`."""
  sys.exit(main())


if __name__ == '__main__':
  run()
