"""The package installs as a wheel and its commands work from outside the
clone: the console scripts, `python -m`, and a config named by its path."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('setuptools') is None,
    reason='building the wheel offline needs setuptools in this environment')

_SCRIPTS = ('adain-kd-train', 'adain-kd-sweep', 'adain-kd-report',
            'adain-kd-import', 'adain-kd-fetch')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  """The wheel of this checkout, installed into a folder of its own."""
  tmp = tmp_path_factory.mktemp('package')
  # Built from a copy: setuptools leaves build/ and *.egg-info/ behind.
  source = tmp / 'source'
  shutil.copytree(os.path.join(ROOT, 'adain_kd_jax'), source / 'adain_kd_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(ROOT, name), source / name)
  build = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
       '--no-build-isolation', '--no-index', str(source), '-w',
       str(tmp / 'wheel')],
      cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
  assert build.returncode == 0, build.stderr[-3000:]
  wheel, = (tmp / 'wheel').iterdir()
  site = tmp / 'site'
  install = subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
       '--target', str(site), str(wheel)],
      cwd=str(tmp), capture_output=True, text=True, timeout=300, check=False)
  assert install.returncode == 0, install.stderr[-3000:]
  outside = tmp / 'elsewhere'
  outside.mkdir()
  env = dict(os.environ, PYTHONPATH=str(site), PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  return {'site': site, 'cwd': str(outside), 'env': env}


def _run(installed, *args, timeout=300):
  return subprocess.run(list(args), cwd=installed['cwd'], env=installed['env'],
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


def test_imports_from_the_install(installed):
  """Outside the clone, adain_kd_jax is the installed copy."""
  proc = _run(installed, sys.executable, '-c',
              'import adain_kd_jax; print(adain_kd_jax.__file__)')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith(str(installed['site']))


@pytest.mark.parametrize('script', _SCRIPTS)
def test_console_scripts_help(installed, script):
  """Every console script answers --help with exit status 0."""
  proc = _run(installed, str(installed['site'] / 'bin' / script), '--help')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip()


def test_train_help_names_the_config_docs(installed):
  """`python -m adain_kd_jax.main --help`: exit 0, says where fields are."""
  proc = _run(installed, sys.executable, '-m', 'adain_kd_jax.main', '--help')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'configs/default.py' in proc.stdout
  assert '--workdir' in proc.stdout


def test_train_outside_the_clone(installed):
  """A config named by its path trains from another directory (its teacher
  found relative to the config's project) and records its config."""
  workdir = os.path.join(installed['cwd'], 'run')
  proc = _run(installed, str(installed['site'] / 'bin' / 'adain-kd-train'),
              f'--config={ROOT}/configs/mock.py:smoke', '--workdir=run',
              '--config.method=kd', '--config.num_train_steps=2',
              '--config.compare_to=')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['method'] == 'kd' and summary['steps'] == 2
  assert summary['teacher_test_accuracy'] is not None  # The real teacher.
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['method'] == 'kd'
