"""The committed reports are what `report` makes of the committed runs.

Every report*.md under results/ beside its runs (DIR/<method>/seed<k>/) is
rebuilt in memory from those runs' summary.json and metrics.jsonl: its
results table and each of its paired tables must appear in it verbatim, so a
report left stale by a run added or retrained later fails here.
"""

import csv
import os
import pathlib
import re

import pytest

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import report
from adain_kd_jax.experiments import tables

_ROOT = pathlib.Path(__file__).resolve().parent.parent / 'results'
_REPORTS = sorted(p for p in _ROOT.rglob('report*.md')
                  if any(p.parent.glob('*/seed*/summary.json')))


def _committed_tables(path: pathlib.Path):
  """(methods of its CSV in order, paired references) of a committed
  report."""
  with open(path.with_suffix('.csv'), newline='') as f:
    methods = [row['method'] for row in csv.DictReader(f)]
  references = re.findall(r'^## (\S+) against each method, paired by seed$',
                          path.read_text(), flags=re.M)
  return methods, references


def test_there_are_committed_reports_to_check():
  names = {str(p.relative_to(_ROOT)) for p in _REPORTS}
  assert ('fashion_mnist_lowdata/runs/final/resnet20-resnet8/'
          'report_decisive.md') in names, names


@pytest.mark.parametrize('path', _REPORTS,
                         ids=[str(p.relative_to(_ROOT)) for p in _REPORTS])
def test_committed_report_is_rebuilt_from_committed_runs(path):
  text = path.read_text()
  methods, references = _committed_tables(path)
  runs = report.select_methods(finished_runs.collect(str(path.parent)),
                               methods if path.stem != 'report' else ())
  rows = tables.aggregate(runs)
  assert [r['method'] for r in rows] == methods, (
      f'{path}: the committed runs have other methods than its CSV')
  assert tables.to_markdown(rows) in text, (
      f'{path}: its results table is not what the committed runs give; '
      'rerun the report command of its README')
  for reference in references:
    pairs = tables.paired_rows(runs, reference)
    assert tables.paired_markdown(reference, pairs, len(references)) in text, (
        f'{path}: its {reference} table is not what the committed runs '
        'give; rerun the report command of its README')
  with open(path.with_suffix('.csv'), newline='') as f:
    assert f.read() == tables.to_csv(rows), os.fspath(path)


_ABSOLUTE_PATH = re.compile(r'(?:^|[\s(`\'"=:])(/(?:[\w.+-]+/)+[\w.+-]*)')


@pytest.mark.parametrize('path', _REPORTS,
                         ids=[str(p.relative_to(_ROOT)) for p in _REPORTS])
def test_committed_report_names_no_absolute_path(path):
  """A committed report names its runs relative to where it was made, so
  it does not carry the path of the machine that wrote it."""
  found = _ABSOLUTE_PATH.findall(path.read_text())
  assert not found, f'{path}: absolute paths {found[:3]}; rerun its command'


def test_every_committed_run_resumes_under_its_plan_today():
  """Each run of the low-data plan that has a committed config.json gets,
  from today's plan and configs, the config it recorded (save fields a
  resume may change when named): a field added since is in
  `run_record.OLDER_RUNS` with the value the older run meant, so the run
  would resume rather than be refused."""
  from adain_kd_jax.experiments import campaign  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.training import run_record  # pylint: disable=g-import-not-at-top
  workdir = _ROOT / 'fashion_mnist_lowdata' / 'runs'
  plan = campaign._load_module(  # pylint: disable=protected-access
      str(_ROOT / 'fashion_mnist_lowdata' / 'plan.py'))
  recorded = [r for r in plan.get_plan(str(workdir))
              if (workdir / r.name / 'config.json').is_file()]
  assert len(recorded) >= 200
  refused = {}
  for job in campaign.build_jobs(recorded, str(workdir), {}):
    diffs = run_record.differences(
        run_record.read(job.run_dir), run_record.config_dict(job.config))
    fields = [k for k, _, _ in diffs if k not in run_record.CHANGEABLE]
    if fields:
      refused[job.run_dir] = fields
  assert not refused, refused
