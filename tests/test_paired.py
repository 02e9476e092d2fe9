"""Paired differences with Student-t confidence intervals, by hand."""

import math

import pytest

from adain_kd_jax.experiments import paired


def test_t_quantiles_known_values():
  """t_{0.975, df} as printed tables give it (4 decimals), at small and large
  df, and the normal quantile in the limit."""
  for df, printed in ((1, 12.7062), (4, 2.7764), (30, 2.0423), (31, 2.0395),
                      (40, 2.0211), (120, 1.9799)):
    assert abs(paired.t975(df) - printed) < 5e-5, df
  assert abs(paired.t975(10**7) - 1.959964) < 1e-6
  with pytest.raises(ValueError, match='df=0'):
    paired.t975(0)


def test_paired_difference_by_hand():
  a = {0: 93.0, 1: 92.5, 2: 93.4, 3: 92.9, 4: 93.2, 7: 99.0}
  b = {0: 92.0, 1: 92.0, 2: 92.4, 3: 92.4, 4: 92.7, 8: 10.0}
  d = paired.paired_difference(a, b)
  assert d['seeds'] == [0, 1, 2, 3, 4]
  assert d['diffs'] == pytest.approx([1.0, 0.5, 1.0, 0.5, 0.5])
  assert d['mean'] == pytest.approx(0.7)
  # Sample std of (1, .5, 1, .5, .5): sqrt(0.3 / 4).
  assert d['std'] == pytest.approx(math.sqrt(0.075))
  t975_4 = 2.7764451052  # t_{0.975, 4}, 11 digits.
  half = t975_4 * math.sqrt(0.075) / math.sqrt(5)
  assert d['ci_low'] == pytest.approx(0.7 - half)
  assert d['ci_high'] == pytest.approx(0.7 + half)
  assert d['excludes_zero'] is True
  assert paired.verdict('adain', 'kd', d).startswith('adain beats kd: +0.70')


def test_paired_difference_not_distinguishable_and_below():
  a = {0: 1.0, 1: 2.0, 2: 3.0}
  b = {0: 2.0, 1: 1.0, 2: 3.0}
  d = paired.paired_difference(a, b)
  assert d['mean'] == pytest.approx(0.0)
  assert d['excludes_zero'] is False
  assert 'not distinguishable' in paired.verdict('x', 'y', d)
  below = paired.paired_difference({0: 1.0, 1: 1.1}, {0: 2.0, 1: 2.0})
  assert paired.verdict('x', 'y', below).startswith('x is below y')
  one = paired.paired_difference({0: 1.0}, {0: 0.5})
  assert one['ci_low'] is None and 'one seed' in paired.verdict('x', 'y', one)
  with pytest.raises(ValueError, match='No common seeds'):
    paired.paired_difference({0: 1.0}, {1: 1.0})


def test_p_value_is_the_paired_t_test():
  """Mean 0.7, std sqrt(0.075), n 5: t = 0.7 / (std / sqrt 5) = 5.715, and
  the two-sided p is 2 * P(T_4 > 5.715) = 0.00463 (scipy's ttest_1samp)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a = {0: 93.0, 1: 92.5, 2: 93.4, 3: 92.9, 4: 93.2}
  b = {0: 92.0, 1: 92.0, 2: 92.4, 3: 92.4, 4: 92.7}
  d = paired.paired_difference(a, b)
  expected = stats.ttest_1samp(d['diffs'], 0.0).pvalue
  assert paired.p_value(d) == pytest.approx(expected, rel=1e-9)
  assert paired.p_value(d) == pytest.approx(0.00463, abs=5e-5)
  assert paired.p_value(paired.paired_difference({0: 1.0}, {0: 0.0})) is None
  same = paired.paired_difference({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})
  assert paired.p_value(same) == 0.0


def test_holm_by_hand():
  """[.01, .04, .03, .2]: sorted x4, x3, x2, x1 with a running max:
  .04, .09, max(.09, .08) = .09, .2 -- back in the given order."""
  got = paired.holm([0.01, 0.04, 0.03, 0.2])
  assert got == pytest.approx([0.04, 0.09, 0.09, 0.2])
  assert paired.holm([0.5, None, 0.6]) == pytest.approx([1.0, None, 1.0])
  assert paired.holm([]) == []


def test_a_verdict_with_a_correction_follows_the_adjusted_p():
  """Its CI excludes 0, but an adjusted p of 0.2 makes it undecided."""
  a = {0: 93.0, 1: 92.5, 2: 93.4, 3: 92.9, 4: 93.2}
  b = {0: 92.0, 1: 92.0, 2: 92.4, 3: 92.4, 4: 92.7}
  d = paired.paired_difference(a, b)
  text = paired.verdict('adain', 'kd', d, adjusted_p=0.2)
  assert text.startswith('adain and kd are not distinguishable')
  assert 'Holm-adjusted p=0.2' in text
  assert paired.verdict('kd', 'adain', paired.paired_difference(b, a),
                        adjusted_p=0.01).startswith('kd is below adain')
