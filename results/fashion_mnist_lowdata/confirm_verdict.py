r"""The pre-registered confirmation's verdict (CONFIRMATION.md), as fixed
before its first run.

  python results/fashion_mnist_lowdata/confirm_verdict.py \
      [results/fashion_mnist_lowdata/runs/confirm/resnet20-resnet8]

Reads the finished runs of the five arms on seeds 5-14 and, only once all
fifty are in (no interim look), writes confirm_verdict.md beside them: the
primary contrast adain_authors - kd and the secondary adain_authors -
logit_mse, test top-1 at the last epoch in points, paired by seed, each a
two-sided paired t-test, the two p-values Holm-adjusted over these two
only, alpha 0.05, and the decision rule's words. Until then it says how
many runs are missing and shows no comparison (exit status 1).
"""

import argparse
import os
import sys

from adain_kd_jax.experiments import finished_runs
from adain_kd_jax.experiments import paired
from adain_kd_jax.experiments import tables

DIRECTORY = 'results/fashion_mnist_lowdata/runs/confirm/resnet20-resnet8'
ARMS = ('none', 'kd', 'logit_mse', 'adain_authors', 'dkd')
SEEDS = tuple(range(5, 15))
REFERENCE = 'adain_authors'
CONTRASTS = ('kd', 'logit_mse')  # Primary, then secondary.
ALPHA = 0.05


def missing_runs(runs, arms=ARMS, seeds=SEEDS):
  """The (arm, seed) pairs of the design that have no finished run."""
  have = {(r['method'], r['seed']) for r in runs}
  return [(a, s) for a in arms for s in seeds if (a, s) not in have]


def decision(diff, adjusted_p):
  """The pre-registered words for one contrast."""
  if adjusted_p < ALPHA:
    return 'higher' if diff['mean'] > 0 else 'lower'
  if diff['ci_high'] <= 0:
    return 'no gain'
  return f'not shown; gains above {diff["ci_high"]:+.2f} points excluded'


def contrasts(runs, reference=REFERENCE, others=CONTRASTS):
  """[(name, paired difference, p, Holm-adjusted p, decision)] of
  reference - each of `others`, last epoch, in points, Holm over them."""
  rows = {r['method']: r for r in tables.paired_rows(runs, reference)}
  diffs = [rows[m]['last'] for m in others]
  p = [paired.p_value(d) for d in diffs]
  adjusted = paired.holm(p)
  return [(f'{reference} - {m}', d, pi, ai, decision(d, ai))
          for m, d, pi, ai in zip(others, diffs, p, adjusted)]


_TITLE = 'Confirmation: the pre-registered verdict'
_SETUP = ('P1 (resnet20 -> resnet8), seeds 5-14, test top-1 at the last '
          'epoch, paired by seed; two-sided paired t-tests, Holm over the '
          'two contrasts, alpha 0.05 (CONFIRMATION.md).')


def to_markdown(results, title=_TITLE, setup=_SETUP, seeds='5-14'):
  lines = [f'# {title}', '', setup, '',
           f'| contrast | mean [95% CI] | per seed ({seeds}) | p | Holm p | '
           'verdict |', '|---|---:|---|---:|---:|---|']
  for name, d, p, adj, words in results:
    per_seed = ' '.join(f'{x:+.2f}' for x in d['diffs'])
    lines.append(f'| {name} | {d["mean"]:+.2f} [{d["ci_low"]:+.2f}, '
                 f'{d["ci_high"]:+.2f}] | {per_seed} | {p:.3g} | {adj:.3g} | '
                 f'{words} |')
  return '\n'.join(lines) + '\n'


def write_when_complete(directory, arms, seeds, render, filename):
  """render(runs) -> markdown, written to directory/filename and printed,
  only once every (arm, seed) of the design has finished (exit status 0);
  until then the count of missing runs and no comparison (1)."""
  runs = [r for r in finished_runs.collect(directory)
          if r['method'] in arms and r['seed'] in seeds]
  missing = missing_runs(runs, arms, seeds)
  if missing:
    print(f'{len(missing)} of {len(arms) * len(seeds)} runs not finished '
          f'(first: {missing[0][0]} seed {missing[0][1]}); the verdict waits '
          'for all of them (no interim look).')
    return 1
  text = render(runs)
  with open(os.path.join(directory, filename), 'w') as f:
    f.write(text)
  print(text, end='')
  return 0


def directory_arg(argv, doc, default=DIRECTORY):
  """The runs' directory from argv[1:] (`default` when none is given)."""
  parser = argparse.ArgumentParser(
      description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('directory', nargs='?', default=default,
                      help=f'the runs (default: {default})')
  return parser.parse_args(argv[1:]).directory


def main(argv):
  directory = directory_arg(argv, __doc__)
  return write_when_complete(directory, ARMS, SEEDS,
                             lambda runs: to_markdown(contrasts(runs)),
                             'confirm_verdict.md')


if __name__ == '__main__':
  sys.exit(main(sys.argv))
