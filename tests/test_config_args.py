"""configs/config_args.py: the one parser of `--config=FILE:ARG`."""

import glob
import os

import pytest

from configs import config_args

DEFAULTS = {'teacher': 'wrn_40_2', 'epochs': 30.0, 'seeds': 3, 'toy': False}
CONFIG_DIR = os.path.dirname(os.path.abspath(config_args.__file__))
FILE = 'configs/example.py'  # As errors name it: from the repository root.


def _parse(arg, **kwargs):
  return config_args.parse_arg(
      arg, DEFAULTS, config=os.path.join(CONFIG_DIR, 'example.py'), **kwargs)


@pytest.mark.parametrize('arg', [None, ''])
def test_no_argument_is_the_defaults(arg):
  assert _parse(arg).to_dict() == DEFAULTS


def test_values_take_the_type_of_their_default():
  args = _parse('seeds=5,toy=True,epochs=2.5,teacher=resnet56')
  assert args.to_dict() == {'teacher': 'resnet56', 'epochs': 2.5,
                            'seeds': 5, 'toy': True}
  assert isinstance(_parse('epochs=2').epochs, float)
  assert _parse('toy=false').toy is False


def test_a_bare_value_sets_the_positional_argument():
  assert _parse('resnet56', positional='teacher').teacher == 'resnet56'
  assert _parse('resnet56,toy=true', positional='teacher').to_dict() == dict(
      DEFAULTS, teacher='resnet56', toy=True)


@pytest.mark.parametrize('arg,why', [
    ('studnet=x', "there is no argument 'studnet'"),
    ('resnet56', 'it is not name=value'),
    ('teacher=a,teacher=b', 'teacher is given twice'),
    ('teacher=', 'teacher has no value'),
    ('seeds=three', 'seeds takes an int, e.g. seeds=3'),
    ('epochs=long', 'epochs takes a float, e.g. epochs=30.0'),
    ('toy=yes', 'toy takes a bool, e.g. toy=False'),
])
def test_a_bad_item_is_one_line_naming_it_and_the_valid_names(arg, why):
  with pytest.raises(ValueError) as info:
    _parse(arg)
  message = str(info.value)
  assert '\n' not in message
  bad_item = arg.split(',')[-1]
  assert message.startswith(
      f'Bad config argument {bad_item!r} for {FILE}: {why}; its arguments are '
      'teacher, epochs, seeds, toy (name=value, comma-separated, any subset), '
      f'e.g. --config={FILE}:teacher=wrn_40_2,epochs=30.0,seeds=3,toy=False.')


def test_every_parameterised_config_uses_it():
  """No config parses its argument by hand any more."""
  for path in glob.glob(os.path.join(CONFIG_DIR, '*.py')):
    with open(path) as f:
      text = f.read()
    if os.path.basename(path) not in ('config_args.py', 'mock.py'):
      assert ".split(',')" not in text and '.partition(' not in text, path
