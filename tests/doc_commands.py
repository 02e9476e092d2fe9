"""The commands the documentation gives, and whether the project has them.

`page_commands(text)` reads a Markdown page's shell blocks (```sh, ```bash)
as a user would paste them: continuation lines joined, comments dropped,
`&&`, `;` and `&` separating commands, `VAR=value` lines substituted into
later commands of the block. `inline_commands(text)` reads the project
commands quoted in the prose (`python -m adain_kd_jax...`, `adain-kd-...`).
`problems(commands, flags_of)` names every project command whose entry
point does not exist or that passes a flag the entry point does not define.
Used by tests/test_documented_commands.py.
"""

import dataclasses
import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from typing import Callable, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = tuple(['README.md'] + sorted(
    os.path.relpath(p, ROOT)
    for pattern in ('docs/*.md', 'results/*/README.md')
    for p in glob.glob(os.path.join(ROOT, pattern))))
_BLOCK = re.compile(r'^[ \t]*```(?:sh|bash|shell)[ \t]*\n(.*?)^[ \t]*```',
                    re.S | re.M)
_INLINE = re.compile(r'`((?:python3? (?:-m adain_kd_jax|train\.py|results/)'
                     r'|adain-kd-)[^`]*)`')
_SEPARATORS = ('&&', ';', '&', '||', '|')
_ASSIGNMENT = re.compile(r'^([A-Za-z_]\w*)=(.*)$')


@dataclasses.dataclass(frozen=True)
class Command:
  """One documented command: where it is and its words."""
  page: str
  argv: tuple[str, ...]

  @property
  def text(self) -> str:
    return ' '.join(self.argv)


def _strip_comment(line: str) -> str:
  """The line up to an unquoted `#` that starts a word."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      quote = None if char == quote else quote
    elif char in '\'"':
      quote = char
    elif char == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i]
  return line


def _split(line: str) -> list[list[str]]:
  """A shell line -> its commands' words (quotes respected)."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars='&;|')
  lexer.whitespace_split = True
  commands, words = [], []
  for token in lexer:
    if token in _SEPARATORS:
      commands.append(words)
      words = []
    else:
      words.append(token)
  return [c for c in commands + [words] if c]


def block_commands(block: str, page: str = '') -> list[Command]:
  """The commands of one shell block, in order."""
  text = re.sub(r'\\\n', ' ', block)
  variables, out = {}, []
  for line in text.splitlines():
    for words in _split(_strip_comment(line)):
      match = _ASSIGNMENT.match(words[0])
      if len(words) == 1 and match:
        variables[match.group(1)] = match.group(2)
        continue
      words = [re.sub(r'\$(\w+)', lambda m: variables.get(m.group(1),
                                                          m.group(0)), w)
               for w in words]
      out.append(Command(page, tuple(words)))
  return out


def page_commands(text: str, page: str = '') -> list[Command]:
  """The commands of every shell block of a page."""
  return [c for block in _BLOCK.findall(text)
          for c in block_commands(block, page)]


def inline_commands(text: str, page: str = '') -> list[Command]:
  """The project commands quoted in a page's prose."""
  text = re.sub(r'```.*?```', '', text, flags=re.S)
  return [Command(page, tuple(shlex.split(m))) for m in _INLINE.findall(text)]


def documented_commands(pages: Iterable[str] = PAGES, inline=False):
  """Every command of the pages (shell blocks; with `inline`, the prose's)."""
  out = []
  for page in pages:
    with open(os.path.join(ROOT, page)) as f:
      text = f.read()
    out += inline_commands(text, page) if inline else page_commands(text,
                                                                     page)
  return out


def _console_scripts() -> dict[str, str]:
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    scripts = tomllib.load(f)['project']['scripts']
  return {name: target.split(':')[0] for name, target in scripts.items()}


def entry_point(argv) -> tuple[str, str] | None:
  """('module', name) or ('script', path) of a project command; None for
  another program (pip, tfds, a venv's python, ...)."""
  argv = list(argv)
  while argv and _ASSIGNMENT.match(argv[0]):
    argv = argv[1:]  # VAR=value before the command.
  if not argv:
    return None
  if argv[0].startswith('adain-kd-'):
    return ('module', _console_scripts().get(argv[0], argv[0]))
  if argv[0] not in ('python', 'python3') or len(argv) < 2:
    return None
  if argv[1] == '-m' and len(argv) > 2 and argv[2].startswith('adain_kd_jax'):
    return ('module', argv[2])
  if argv[1].endswith('.py'):
    return ('script', argv[1])
  return None


def flags_passed(argv) -> list[str]:
  """The flag names a command passes: `--a.b=1` -> 'a', `--nox` -> 'nox'."""
  names = []
  for word in argv:
    match = re.match(r'^--?([A-Za-z_][\w-]*)', word)
    if match and word not in ('-m',):
      names.append(match.group(1))
  return names


def help_flags(entry: tuple[str, str]) -> set[str] | None:
  """The flags an entry point's --helpfull lists (None: it does not start)."""
  kind, name = entry
  argv = ['-m', name] if kind == 'module' else [os.path.join(ROOT, name)]
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop('XLA_FLAGS', None)
  found = set()
  # absl's --helpfull lists every flag; an argparse command knows --help.
  for option in ('--helpfull', '--help'):
    proc = subprocess.run([sys.executable, *argv, option], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120,
                          check=False)
    for negatable, flag in re.findall(
        r'^\s*(?:-\w, )?--(\[no\])?([\w-]+)', proc.stdout, flags=re.M):
      found.add(flag)
      if negatable:
        found.add('no' + flag)
    if found:
      return found
  return None


def entry_exists(entry: tuple[str, str]) -> bool:
  kind, name = entry
  if kind == 'script':
    return os.path.isfile(os.path.join(ROOT, name))
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  try:
    return importlib.util.find_spec(name) is not None
  except ModuleNotFoundError:
    return False


def problems(commands: Iterable[Command],
             flags_of: Callable[[tuple[str, str]], set[str] | None]):
  """One line per project command that names a missing entry point or flag."""
  out = []
  for command in commands:
    entry = entry_point(command.argv)
    if entry is None:
      continue
    where = f'{command.page}: `{command.text}`'
    if not entry_exists(entry):
      out.append(f'{where}: there is no {entry[0]} {entry[1]}')
      continue
    known = flags_of(entry)
    if known is None:
      out.append(f'{where}: {entry[1]} --helpfull lists no flags')
      continue
    unknown = [f for f in flags_passed(command.argv) if f not in known]
    if unknown:
      out.append(f'{where}: {entry[1]} has no flag '
                 + ', '.join(f'--{f}' for f in unknown))
  return out
