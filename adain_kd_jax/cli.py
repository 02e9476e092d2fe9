"""What the entry points (train.py, sweep.py) share on the command line.

`run(main)` is `absl.app.run(main)` with two changes:

  * A usage or input error (an unknown flag or config field, a value of the
    wrong type, a missing config file, or anything the library marks as the
    user's: a bad config value, teacher, data directory or workdir) ends
    the program with ONE line on stderr, `PROG: error: MESSAGE`, naming the
    field and the fix, and exit status 2 (`EXIT_USAGE`). `--traceback` shows
    Python's traceback instead. Errors during training keep their traceback.
  * `--help` (`-h`, `--helpshort`) prints the entry point's docstring and
    the project's flags, `--helpfull` every flag, on stdout with exit status
    0 (absl's own exits 1).
  * A `--config=FILE` inside a configs/ package works from any directory:
    the directory above that package goes on the import path (the configs
    import each other as `configs.x`) and is `project_root()`. Every
    relative path the project reads or writes (a config's teacher
    checkpoint, a plan, a plan's runs and exports) is resolved by one rule,
    `resolve_path`: as given if it exists from the working directory, else
    under `project_root()`.
  * Ctrl-C that reaches `main` (before training starts, or a second one
    during training; see preemption.py) ends it with one line and exit status
    130 (`EXIT_INTERRUPTED`, the shell's code for SIGINT).

The library marks the errors that are the user's with `user_errors()`
(config_checks.check, the run's set-up before anything is compiled), so
that the same ValueError raised inside a training step keeps its traceback.
Imports no JAX.
"""

import contextlib
import difflib
import os
import re
import sys
from typing import Any, Callable, Iterator, Sequence

from absl import app
from absl import flags

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C.
_HELP = ('-h', '-help', '--help', '-?', '--helpshort', '-helpshort')
_HELPFULL = ('--helpfull', '-helpfull')
# The directory above this package: the clone (or an editable install's
# source), or site-packages for an installed wheel.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_project_root = None

TRACEBACK = flags.DEFINE_bool(
    'traceback', False, 'Show the Python traceback of a usage or input error '
    'instead of the one-line message.')

_DID_YOU_MEAN = re.compile(r'Did you mean "([^"]+)"')
_ERRNO = re.compile(r'\[Errno \d+\] ([^\n]*)')
_REQUIRED = re.compile(r'Flag --(\w+) must have a value other than None')
_TRACEBACK_TEXT = 'Traceback (most recent call last)'
_BAD_VALUE = re.compile(r'^flag --(\w+)\.([\w.]+)=(.*?): (.*)$', re.DOTALL)
# Exception types that `user_errors` marks; the attribute that marks them.
USER_ERROR_TYPES = (ValueError, OSError, KeyError)
_MARK = 'adain_kd_user_error'


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """Marks a ValueError, OSError or KeyError raised inside as the user's.

  The exception propagates unchanged (same type and message); `run` prints
  it as one line with exit status 2.
  """
  try:
    yield
  except USER_ERROR_TYPES as e:
    setattr(e, _MARK, True)
    raise


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is the user's to fix (see the module docstring)."""
  return (isinstance(error, (app.UsageError, flags.Error))
          or bool(getattr(error, _MARK, False)))


def exception_chain(error: BaseException) -> list[BaseException]:
  """`error` and the exceptions it was raised from, outermost first."""
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def _text(error: BaseException) -> str:
  # str(KeyError('x')) is "'x'"; its argument is the message.
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  return str(error)


def did_you_mean(value: Any, choices: Sequence[str]) -> str:
  """' Did you mean 'x'?' for the choice closest to a misspelt `value`
  ('' when none is close)."""
  close = difflib.get_close_matches(str(value), list(choices), n=1)
  return f' Did you mean {close[0]!r}?' if close else ''


def _one_line(text: str) -> str:
  return ' '.join(text.split())


def _unknown_field(chain, argv: Sequence[str]) -> str | None:
  """ml_collections' KeyError for a `--config.a.b=v` field that is not there."""
  key_errors = [e for e in chain if isinstance(e, KeyError) and e.args]
  if not key_errors:
    return None
  # The innermost KeyError is the bare key; an outer one adds 'Did you mean'.
  key = (_text(key_errors[-1]).strip().splitlines() or [''])[0].strip('\'"')
  arg = next((a for a in argv if re.match(
      rf'--?\w+(\.\w+)*\.{re.escape(key)}(=|$)', a)), None)
  if arg is None:
    return None
  path = arg.lstrip('-').split('=', 1)[0]
  parent = path.rsplit('.', 1)[0]
  hints = [m.group(1) for e in key_errors
           if (m := _DID_YOU_MEAN.search(_text(e)))]
  fix = (f'did you mean --{parent}.{hints[0]}?' if hints else
         f'see the fields of {parent} in the config file.')
  return f'{arg}: {parent} has no field {key!r}; {fix}'


def _bad_value(text: str) -> str | None:
  """absl's error for `--config.a=v` of the wrong type, with the type."""
  match = _BAD_VALUE.match(text)
  if not match or match.group(1) not in flags.FLAGS:
    return None
  name, path, value, why = match.groups()
  try:
    current = flags.FLAGS[name].value
    for key in path.split('.'):
      current = current[key]
  except Exception:  # pylint: disable=broad-except
    return None
  kind = type(current).__name__
  article = 'an' if kind[0] in 'aeiou' else 'a'
  return (f'--{name}.{path}={value}: {_one_line(why)}; {name}.{path} takes '
          f'{article} {kind}, e.g. --{name}.{path}={current}.')


def message(error: BaseException, argv: Sequence[str] = ()) -> str:
  """The one-line message for a usage or input error raised with `argv`."""
  chain = exception_chain(error)
  unknown = _unknown_field(chain, argv)
  if unknown:
    return unknown
  for e in chain:
    if isinstance(e, SyntaxError):
      source = f' in `{e.text.strip()}`' if e.text and e.text.strip() else ''
      return (f'{e.filename}, line {e.lineno}: {e.msg}{source}; fix the '
              'file.')
    text = _text(e)
    bad_value = _bad_value(text)
    if bad_value:
      return bad_value
    required = _REQUIRED.search(text)
    if required:
      name = required.group(1)
      holder = flags.FLAGS[name] if name in flags.FLAGS else None
      return (f'--{name} is required' +
              (f' ({holder.help})' if holder is not None else '.'))
    if 'Failed loading config file' in text:
      # The last --config=FILE is the one absl used.
      arg = next((a for a in reversed(argv) if re.match(r'--?config=', a)),
                 '--config')
      why = _ERRNO.search(text)
      return (f'{arg}: cannot load the config file'
              + (f' ({why.group(1)})' if why else '') +
              '; name a configs/*.py file, e.g. --config=configs/default.py.')
  # The innermost message that is not a formatted traceback (ml_collections
  # wraps a config file's own exception in one).
  texts = [_text(e) for e in chain if _TRACEBACK_TEXT not in _text(e)]
  return _one_line(texts[0] if texts else _text(chain[-1]))


def _traceback_wanted(argv: Sequence[str]) -> bool:
  if flags.FLAGS.is_parsed():
    return TRACEBACK.value
  return any(a in ('--traceback', '-traceback', '--traceback=true',
                   '--traceback=True') for a in argv)


def fail(error: BaseException | str, argv: Sequence[str] = ()) -> None:
  """Prints `PROG: error: MESSAGE` (one line) on stderr and exits with 2."""
  prog = os.path.basename(argv[0]) if argv else 'python'
  if isinstance(error, str):
    error = ValueError(error)
  print(f'{prog}: error: {_one_line(message(error, argv))}', file=sys.stderr,
        flush=True)
  sys.exit(EXIT_USAGE)


def project_root() -> str:
  """The directory holding the configs/ of --config (see the module
  docstring); without one, the repository this package lives in."""
  return _project_root or PACKAGE_ROOT


def resolve_path(path: str) -> str:
  """The one rule for relative paths: as given if it exists from the
  working directory, else under `project_root()`; absolute ones unchanged."""
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  return os.path.join(project_root(), path)


def use_config_root(argv: Sequence[str]) -> None:
  """Makes the configs/ package of every `--config=FILE[:arg]` importable."""
  global _project_root
  for arg in argv:
    match = re.match(r'--?config=([^:]+)', arg)
    if not match:
      continue
    package = os.path.dirname(os.path.abspath(match.group(1)))
    if (os.path.basename(package) == 'configs'
        and os.path.isfile(os.path.join(package, '__init__.py'))):
      _project_root = os.path.dirname(package)
      if _project_root not in sys.path:
        sys.path.insert(0, _project_root)


def _help(main, argv: Sequence[str]) -> None:
  """Prints the usage (see the module docstring) and exits with status 0."""
  module = sys.modules.get(getattr(main, '__module__', ''))
  if any(a in _HELPFULL for a in argv):
    text = flags.FLAGS.get_help()
  else:
    text = '\n'.join(
        flags.FLAGS.module_help(name)
        for name in flags.FLAGS.flags_by_module_dict()
        if name.startswith('adain_kd_jax') or name == '__main__')
    text += '\n\n(--helpfull: every flag, JAX and absl ones too.)'
  doc = (module.__doc__ or '').strip() if module else ''
  print(f'{doc}\n\n{text}'.strip(), flush=True)
  sys.exit(0)


def run(main: Callable[[list[str]], Any],
        argv: Sequence[str] | None = None) -> None:
  """`app.run(main)` with one-line usage and input errors (see above)."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in _HELP + _HELPFULL for a in argv[1:]):
    _help(main, argv)
  use_config_root(argv)

  def parse(args):
    try:
      return flags.FLAGS(args)
    except (flags.Error, KeyError, AttributeError, ValueError, OSError,
            SyntaxError) as e:
      # ml_collections raises KeyError / AttributeError for unknown fields,
      # and a config file's SyntaxError as it is.
      if _traceback_wanted(args):
        raise
      fail(e, args)

  def guarded(args):
    try:
      return main(args)
    except KeyboardInterrupt as e:
      if _traceback_wanted(argv):
        raise
      prog = os.path.basename(argv[0])
      print(f'{prog}: {_one_line(str(e)) or "interrupted (Ctrl-C)."}',
            file=sys.stderr, flush=True)
      return EXIT_INTERRUPTED
    except Exception as e:  # pylint: disable=broad-except
      if not is_user_error(e) or _traceback_wanted(argv):
        raise
      fail(e, argv)

  app.run(guarded, argv=argv, flags_parser=parse)


def config_value(holder: flags.FlagHolder) -> Any:
  """`holder.value` of a config flag; a file that fails to load is the user's.

  ml_collections loads `--config=FILE` lazily and raises a bare OSError.
  """
  with user_errors():
    holder.value.keys()  # Raises here if the file failed to load.
    return holder.value
