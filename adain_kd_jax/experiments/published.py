r"""Our numbers beside the published ones, for one row of a benchmark table.

  from adain_kd_jax.experiments import published
  published.write_beside('runs/c100/wrn_40_2-wrn_16_2',
                         {'teacher': 75.61, 'none': 73.26, 'kd': 74.92, ...},
                         at={'dkd': 'best'})

A row's directory is a sweep directory (`<method>/seed<k>/summary.json`, as
`finished_runs.collect` reads it). Each published number is set beside ours
under its paper's convention: top-1 at the last epoch (the CRD table), or at the
best test epoch (`at[method] = 'best'`, the DKD table); a number at an
epoch its source does not state (`at[method] = 'unknown'`) is set beside
ours without a difference. The row `teacher` is
the teacher's test top-1 as its teacher.json records it (for an imported
teacher, the `--test_accuracy` given to the importer), `none` the student
alone. Methods we ran without a published
number still get their row, with '-' there.
"""

import os
from typing import Any, Mapping

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import tables

FILE = 'published.md'
HEADER = ('| method | n | ours @ last epoch (%) | ours @ best epoch (%) '
          '| published (%) | published at | ours - published |')


def _cell(mean, std=None):
  if mean is None:
    return '-'
  return f'{100 * mean:.2f}' + ('' if std is None else f' ± {100 * std:.2f}')


def beside_rows(rows: list[dict[str, Any]],
                published: Mapping[str, float],
                at: Mapping[str, str] | None = None) -> str:
  """A markdown table of `tables.aggregate`'s rows beside `published`.

  Args:
    rows: `tables.aggregate(finished_runs.collect(row_dir))`.
    published: {method: top-1 in %}, with 'teacher' for the teacher and
      'none' for the student alone.
    at: {method: 'best'} for numbers published at the best epoch,
      'unknown' where the source does not say (no difference taken); 'last'
      for every other.

  Returns:
    The table; 'ours - published' compares ours at the published epoch.
  """
  at = dict(at or {})
  lines = [HEADER, '|---|---:|---:|---:|---:|---|---:|']
  # The teacher's accuracy as its teacher.json records it, over every run.
  with_teacher = [r for r in rows if r.get('teacher_accuracy') is not None]
  n = sum(r['n'] for r in with_teacher)
  ours = {'teacher': {'n': n, 'last_mean': sum(
      r['n'] * r['teacher_accuracy'] for r in with_teacher) / n if n else None}}
  ours.update({r['method']: r for r in rows})
  names = ['teacher'] + [m for m in published if m != 'teacher' and m in ours]
  names += [m for m in ours if m not in names]
  names += [m for m in published if m not in names]
  for name in names:
    row = ours.get(name, {})
    when = at.get(name, 'last')
    value = published.get(name)
    mine = row.get(f'{when}_mean')
    diff = ('-' if value is None or mine is None
            else f'{100 * mine - value:+.2f}')
    lines.append('| ' + ' | '.join([
        name, str(row.get('n', 0)),
        _cell(row.get('last_mean'), row.get('last_std')),
        _cell(row.get('best_mean'), row.get('best_std')),
        '-' if value is None else f'{value:.2f}',
        '-' if value is None else when, diff]) + ' |')
  return '\n'.join(lines) + '\n'


def write_beside(row_dir: str, published: Mapping[str, float],
                 at: Mapping[str, str] | None = None,
                 title: str = '') -> str:
  """Writes ROW_DIR/published.md (our finished runs beside `published`);
  returns its text."""
  rows = tables.aggregate(finished_runs.collect(row_dir))
  text = (f'## {title}\n\n' if title else '') + beside_rows(
      rows, published, at)
  with open(os.path.join(row_dir, FILE), 'w') as f:
    f.write(text)
  return text
