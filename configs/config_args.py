r"""The one parser for the argument of a parameterised config.

`--config=configs/x.py:ARG` makes ml_collections call `get_config(ARG)`. Every
config that takes an argument reads it with `parse_arg`:

  def get_config(arg=None):
    args = config_args.parse_arg(
        arg, {'teacher': 'wrn_40_2', 'student': 'wrn_16_2'}, config=__file__)
    config.model = args.student

ARG is `name=value` items separated by commas, any subset in any order
(`teacher=resnet56,student=resnet20`); names left out keep their defaults. A
value takes the type of its default: str, int, float or bool (true/false).
A config may name one argument `positional`: then a bare value (no `=`) sets
it, as in `configs/fashion_mnist_teacher.py:wrn_40_2`. Anything else is a
ValueError of one line naming the item, what is wrong and the valid names.

Imports nothing of the library, so loading a config stays cheap.
"""

import os
from typing import Any, Mapping

import ml_collections

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOLS = {'true': True, 'false': False}


def parse_arg(arg: str | None, defaults: Mapping[str, Any], *, config: str,
              positional: str | None = None) -> ml_collections.ConfigDict:
  """Parses `arg` against `defaults`; returns every argument, typed.

  Args:
    arg: what follows the ':' of `--config=FILE:ARG` (None or '': defaults).
    defaults: argument name -> default value; its type is the argument's.
    config: the config file (`__file__`), named in errors.
    positional: the argument that a bare value (no '=') sets, if any.

  Returns:
    A ConfigDict of every argument in `defaults`, with `arg`'s values.

  Raises:
    ValueError: one line, for an unknown or repeated name, an item without
      '=' (no `positional`), an empty value, or a value of the wrong type.
  """
  values = dict(defaults)
  given = set()
  for item in (arg or '').split(','):
    if not item:
      continue
    name, sep, text = item.partition('=')
    if not sep and positional is not None:
      name, text = positional, item
    if not sep and positional is None:
      _fail(item, config, defaults, "it is not name=value")
    if name not in defaults:
      _fail(item, config, defaults, f'there is no argument {name!r}')
    if name in given:
      _fail(item, config, defaults, f'{name} is given twice')
    if not text:
      _fail(item, config, defaults, f'{name} has no value')
    values[name] = _typed(item, config, defaults, name, text)
    given.add(name)
  return ml_collections.ConfigDict(values)


def _typed(item: str, config: str, defaults: Mapping[str, Any], name: str,
           text: str) -> Any:
  """`text` as the type of `defaults[name]`, or a one-line ValueError."""
  kind = type(defaults[name])
  if kind is bool:
    if text.lower() in _BOOLS:
      return _BOOLS[text.lower()]
  else:
    try:
      return kind(text)
    except ValueError:
      pass
  _fail(item, config, defaults,
        f'{name} takes {"an" if kind is int else "a"} {kind.__name__}, e.g. '
        f'{name}={defaults[name]}')


def _fail(item: str, config: str, defaults: Mapping[str, Any],
          why: str) -> None:
  path = os.path.relpath(os.path.abspath(config), _REPO_ROOT)
  example = ','.join(f'{k}={v}' for k, v in defaults.items())
  raise ValueError(
      f'Bad config argument {item!r} for {path}: {why}; its arguments are '
      f'{", ".join(defaults)} (name=value, comma-separated, any subset), e.g. '
      f'--config={path}:{example}.')
