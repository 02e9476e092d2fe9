"""README.md and docs/: every relative link reaches a file, and every
#anchor a heading of it (GitHub's slugs)."""

import glob
import os
import re

import pytest

from tests.conftest import ROOT

PAGES = ['README.md'] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'docs',
                                                             '*.md')))
_LINK = re.compile(r'\]\(([^)\s]+)\)')


def slug(heading):
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces
  to dashes."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _anchors(path):
  with open(path) as f:
    text = re.sub(r'```.*?```', '', f.read(), flags=re.S)
  return {slug(m) for m in re.findall(r'^#+ (.*)$', text, flags=re.M)}


def test_slug_is_githubs():
  """Headings with code, colons and commas slug as GitHub writes them."""
  assert slug('Grids: `sweep --grid`') == 'grids-sweep---grid'
  assert slug('Nothing lost: resume, faults, bad input') == (
      'nothing-lost-resume-faults-bad-input')


@pytest.mark.parametrize('page', PAGES)
def test_relative_links_resolve(page):
  """No link of the page points at a missing file or heading."""
  with open(os.path.join(ROOT, page)) as f:
    links = _LINK.findall(f.read())
  broken = []
  for link in links:
    if re.match(r'[a-z]+:', link):
      continue  # http(s), mailto: not checked here.
    target, _, anchor = link.partition('#')
    path = (os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target))
            if target else os.path.join(ROOT, page))
    if not os.path.exists(path):
      broken.append(f'{link} (no file)')
    elif anchor and anchor not in _anchors(path):
      broken.append(f'{link} (no heading)')
  assert not broken, f'{page}: {broken}'


def test_method_table_lists_every_method_with_the_settings_its_terms_read():
  """docs/method.md's table: one row per METHODS entry, in order, whose
  settings column is what the method's terms declare (config_fields)."""
  from adain_kd_jax import methods  # pylint: disable=import-outside-toplevel
  with open(os.path.join(ROOT, 'docs', 'method.md')) as f:
    text = f.read()
  table = text[text.index('| method | terms |'):]
  lines = table.split('\n\n')[0].splitlines()[2:]
  rows = [line.split('|')[1:-1] for line in lines]
  assert [r[0].strip().strip('`') for r in rows] == list(methods.METHODS)
  for row in rows:
    method = row[0].strip().strip('`')
    cell = row[-1].strip()
    listed = () if cell == '-' else tuple(
        x.strip().strip('`') for x in cell.split(','))
    assert listed == methods.setting_fields(method), method


# Modules that no longer exist, and the names they went by: a docstring,
# comment or page naming one sends the reader nowhere.
_GONE = tuple(re.compile(p) for p in (
    r'\btrain_lib\b', r'\bdistill\.(create|METHODS)\b',
    r'(?<![\w/])losses_baselines\.py', r'(?<![\w/])losses\.py',
    r'\btorch_names\b', r'`import_torch`', r"import_torch's",
    r'(?<![\w/])imagenet_input\.py', r'\brun_grid\b',
    r'\bgrid_step\.Member\b'))


def _project_texts():
  for top in ('adain_kd_jax', 'configs', 'benchmarks', 'tests', 'docs',
              'scripts'):
    for path in glob.glob(os.path.join(ROOT, top, '**', '*'), recursive=True):
      if path.endswith(('.py', '.md', '.sh')) and os.path.isfile(path):
        yield path
  yield from (os.path.join(ROOT, p) for p in ('README.md', 'train.py'))


def test_no_text_names_a_module_that_is_gone():
  """Old module names (`_GONE`) appear nowhere in code, tests or docs."""
  me = os.path.abspath(__file__)
  found = []
  for path in _project_texts():
    if os.path.abspath(path) == me:
      continue
    with open(path, encoding='utf-8') as f:
      text = f.read()
    found += [f'{os.path.relpath(path, ROOT)}: {word.pattern}'
              for word in _GONE if word.search(text)]
  assert not found, found


def test_architecture_counts_are_measured():
  """docs/architecture.md's file counts per package are the package's, and
  no module of the package or of benchmarks/ is over 400 lines."""
  with open(os.path.join(ROOT, 'docs', 'architecture.md')) as f:
    text = ' '.join(f.read().split())
  said = text[text.index('7 packages ('):].split(')')[0]
  counts = dict(re.findall(r'(\w+) (\d+)', said))
  package = os.path.join(ROOT, 'adain_kd_jax')
  packages = sorted(d for d in os.listdir(package)
                    if os.path.isfile(os.path.join(package, d, '__init__.py')))
  assert sorted(counts) == packages
  for name, count in counts.items():
    assert len(glob.glob(os.path.join(package, name, '*.py'))) == int(
        count), name
  modules = glob.glob(os.path.join(package, '**', '*.py'), recursive=True)
  modules += glob.glob(os.path.join(ROOT, 'benchmarks', '*.py'))
  with_lines = {m: sum(1 for _ in open(m, encoding='utf-8')) for m in modules}
  assert not {m: n for m, n in with_lines.items() if n > 400}
