"""The command line: usage and input errors are one line on stderr, exit 2.

Each case runs train.py (or the sweep, the report) in a subprocess and fails
before anything is compiled: a few seconds each.
"""

import os
import re

import pytest

from adain_kd_jax import cli
from tests.conftest import idx_smoke_flags
from tests.conftest import run_python
from tests.conftest import run_train_py

# (id, flags, regex the one line must match). '@smoke' stands for
# idx_smoke_flags (the small IDX data and a resnet8 teacher).
TRAIN_CASES = [
    ('unknown_field', ['@smoke', '--config.metod=kd'],
     r"--config\.metod=kd: config has no field 'metod'; did you mean "
     r'--config\.method\?$'),
    ('unknown_nested_field', ['@smoke', '--config.loss.adian=1'],
     r"config\.loss has no field 'adian'; did you mean --config\.loss\.adain"),
    ('wrong_type', ['@smoke', '--config.batch_size=abc'],
     r"--config\.batch_size=abc: invalid literal for int\(\).*; "
     r'config\.batch_size takes an int, e.g\. --config\.batch_size=16'),
    ('no_config', [], r'--config is required \(A configs/\*\.py file'),
    ('missing_config_file', ['--config=configs/nope.py'],
     r'--config=configs/nope\.py: cannot load the config file \(No such '
     r'file or directory.*e\.g\. --config=configs/default\.py'),
    ('bad_config_argument',
     ['--config=configs/cifar100_distill.py:studnet=wrn_16_2'],
     r"Bad config argument 'studnet=wrn_16_2' for configs/cifar100_distill\.py"
     r": there is no argument 'studnet'; its arguments are teacher, student, "
     r'method .*e\.g\. --config=configs/cifar100_distill\.py:teacher='),
    ('stray_argument', ['@smoke', 'extra'],
     r"Unexpected arguments \['extra'\]: every argument is a --flag"),
    ('unknown_method', ['@smoke', '--config.method=adian'],
     r"Unknown method 'adian' \(config\.method\)\. Valid methods: .*adain_kd"),
    ('idx_for_cifar', ['@smoke', '--config.dataset=cifar100'],
     r"config\.data_source='idx' is invalid: config\.dataset='cifar100' has "
     r'no IDX files .*use --config\.data_source=tfds'),
    ('missing_data_dir', ['@smoke', '--config.data_dir=/nonexistent/data'],
     r'fashion_mnist IDX files .* not found; looked in: '
     r"\['/nonexistent/data'.*Set config\.data_dir \(--config\.data_dir=DIR\)"),
    ('teacher_of_another_arch', ['@smoke', '--config.teacher=resnet20'],
     r"is a 'resnet8' but config\.teacher is 'resnet20': set "
     r'--config\.teacher=resnet8'),
    ('workdir_is_a_file', ['@smoke', '@file_workdir'],
     r"--workdir='.*a_file' is an existing file, not a directory"),
    ('empty_image_folder', ['@smoke', '@empty_folder'],
     r'folder:.*/empty: .*/empty/train holds no images; put one folder per '
     r'class there'),
]


def _expand(flags_, idx_data_dir, teacher_export, tmp_path):
  out = []
  for f in flags_:
    if f == '@smoke':
      out += idx_smoke_flags(idx_data_dir, teacher_export)
    elif f == '@file_workdir':
      path = tmp_path / 'a_file'
      path.write_text('x')
      out.append(f'--workdir={path}')
    elif f == '@empty_folder':
      os.makedirs(tmp_path / 'empty' / 'train' / 'cat')
      out.append(f'--config.dataset=folder:{tmp_path / "empty"}')
    else:
      out.append(f)
  return out


def _assert_one_line(proc, pattern, prog='train.py'):
  """Exit status 2 and a single stderr line `PROG: error: ...`."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == cli.EXIT_USAGE, proc.stderr[-3000:]
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
  assert lines[0].startswith(f'{prog}: error: '), lines[0]
  assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize('name,flags_,pattern', TRAIN_CASES,
                         ids=[c[0] for c in TRAIN_CASES])
def test_train_py_bad_input_is_one_line(name, flags_, pattern, tmp_path,
                                        idx_data_dir, teacher_export):
  """train.py: one line naming the field and the fix, exit 2, no workdir."""
  del name
  workdir = str(tmp_path / 'run')
  proc = run_train_py(workdir, *_expand(flags_, idx_data_dir, teacher_export,
                                        tmp_path), timeout=120)
  _assert_one_line(proc, pattern)
  assert not os.path.exists(workdir)


def test_traceback_flag_shows_the_traceback(tmp_path):
  """--traceback: Python's traceback instead of the one line."""
  proc = run_train_py(str(tmp_path / 'run'), '--config=configs/smoke.py',
                      '--config.metod=kd', '--traceback', timeout=120)
  assert proc.returncode not in (0, cli.EXIT_USAGE)
  assert 'Traceback (most recent call last)' in proc.stderr
  assert 'Did you mean "method"' in proc.stderr


@pytest.mark.parametrize('flags_,pattern', [
    (['--config.metod=kd'], r'did you mean --config\.method\?'),
    (['--seeds=a'], r"--seeds must be integers, got \['a'\]"),
    (['--methods=adian'], r"Unknown method 'adian' \(config\.method\)"),
])
def test_sweep_bad_input_is_one_line(flags_, pattern, tmp_path):
  """The sweep prints one line and exits 2 too."""
  proc = run_python('-m', 'adain_kd_jax.experiments.sweep',
                    '--config=configs/smoke.py',
                    f'--workdir={tmp_path / "sweep"}', '--seeds=0', *flags_,
                    timeout=120)
  _assert_one_line(proc, pattern, prog='sweep.py')


def test_report_without_finished_runs_is_one_line(tmp_path):
  """report on a directory without finished runs: one line, no help text."""
  proc = run_python('-m', 'adain_kd_jax.experiments.report', str(tmp_path),
                    timeout=120)
  _assert_one_line(proc, f'No finished run under {re.escape(str(tmp_path))}: '
                   r'name a sweep directory \(\*/seed\*/summary\.json\) or a '
                   r'run directory \(summary\.json\)', prog='report.py')


def test_second_ctrl_c_is_one_line_and_status_130():
  """A KeyboardInterrupt out of main: its message on one line, exit 130."""
  code = ('from adain_kd_jax import cli\n'
          'def main(argv):\n'
          "  raise KeyboardInterrupt('aborted by a second Ctrl-C')\n"
          'cli.run(main)\n')
  proc = run_python('-c', code, timeout=60)
  assert proc.returncode == cli.EXIT_INTERRUPTED
  assert proc.stderr.strip() == '-c: aborted by a second Ctrl-C'


def test_user_errors_keep_type_and_message():
  """user_errors marks ValueError / OSError / KeyError and re-raises them."""
  with pytest.raises(FileNotFoundError, match='^gone$') as info:
    with cli.user_errors():
      raise FileNotFoundError('gone')
  assert cli.is_user_error(info.value)
  with pytest.raises(TypeError) as info:
    with cli.user_errors():
      raise TypeError('a bug, not the user')
  assert not cli.is_user_error(info.value)
  assert not cli.is_user_error(ValueError('raised while training'))


def test_message_of_an_unknown_field():
  """ml_collections' KeyError chain becomes the field and the suggestion."""
  try:
    try:
      raise KeyError("'metod'\nDid you mean \"method\" instead of \"metod\"?")
    except KeyError as e:
      raise AttributeError(e) from e
  except AttributeError as e:
    error = e
  assert cli.message(error, ['train.py', '--config.metod=kd']) == (
      "--config.metod=kd: config has no field 'metod'; did you mean "
      '--config.method?')
  assert cli.message(ValueError('two\n  lines')) == 'two lines'


def test_help_exits_0_and_says_where_the_fields_are():
  """train.py --help: exit 0, the usage, the flags and where the config
  fields are documented (absl's own --help exits 1)."""
  proc = run_python('train.py', '--help', timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'configs/default.py' in proc.stdout
  assert '--workdir' in proc.stdout and '--resume_change' in proc.stdout


def test_one_rule_for_relative_paths(tmp_path, monkeypatch):
  """resolve_path: from the working directory if there, else the project's."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'teachers').mkdir()
  assert cli.resolve_path('teachers') == 'teachers'
  assert cli.resolve_path('runs/new') == os.path.join(cli.project_root(),
                                                      'runs/new')
  assert cli.resolve_path(str(tmp_path / 'x')) == str(tmp_path / 'x')
  assert cli.resolve_path('') == ''
