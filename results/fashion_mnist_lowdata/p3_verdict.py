r"""P3's verdict (CONFIRMATION.md, "The wide teacher"), as fixed before its
first student run.

  python results/fashion_mnist_lowdata/p3_verdict.py \
      [results/fashion_mnist_lowdata/runs/p3final/wrn_16_2-resnet8]

The wide teacher wrn_16_2, the resnet8 student, AdaIN at S-1 where the
teacher's tail judges the std. Three contrasts of adain_s1_both_warm (mean
and std): against adain_s1_mean_warm (mean only, the same point, weight and
warm-up: the variance contrast), against kd and against logit_mse. Test
top-1 at the last epoch in points, paired by seed (0-9), two-sided paired
t-tests, Holm over the three, alpha 0.05, the confirmation's decision
words. Only once all fifty runs are in (no interim look) it writes
p3_verdict.md beside them; until then it says how many are missing (exit
status 1).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import confirm_verdict  # pylint: disable=g-import-not-at-top,wrong-import-position

DIRECTORY = 'results/fashion_mnist_lowdata/runs/p3final/wrn_16_2-resnet8'
ARMS = ('none', 'kd', 'logit_mse', 'adain_s1_mean_warm',
        'adain_s1_both_warm')
SEEDS = tuple(range(10))
REFERENCE = 'adain_s1_both_warm'
CONTRASTS = ('adain_s1_mean_warm', 'kd', 'logit_mse')  # In this order.
SETUP = ('wrn_16_2 -> resnet8, AdaIN at S-1, seeds 0-9, test top-1 at the '
         'last epoch, paired by seed; two-sided paired t-tests, Holm over '
         'the three contrasts, alpha 0.05 (CONFIRMATION.md).')


def contrasts(runs):
  """[(name, paired difference, p, Holm-adjusted p, decision)]."""
  return confirm_verdict.contrasts(runs, REFERENCE, CONTRASTS)


def to_markdown(results):
  return confirm_verdict.to_markdown(
      results, 'P3: the pre-registered verdict', SETUP, '0-9')


def main(argv):
  directory = confirm_verdict.directory_arg(argv, __doc__, DIRECTORY)
  return confirm_verdict.write_when_complete(
      directory, ARMS, SEEDS, lambda runs: to_markdown(contrasts(runs)),
      'p3_verdict.md')


if __name__ == '__main__':
  sys.exit(main(sys.argv))
