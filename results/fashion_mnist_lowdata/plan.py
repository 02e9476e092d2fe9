"""Every run of the low-data Fashion-MNIST benchmark, in the order they run.

  python -m adain_kd_jax.experiments.campaign \
      --plan=results/fashion_mnist_lowdata/plan.py \
      --workdir=results/fashion_mnist_lowdata/runs [--only=curve/] [--list]

Names are directories under runs/; a run whose summary.json is there is
finished and skipped, and its committed config.json is what ran.
  teacher/<model>                the teacher on the 55,000 training images
                                 the validation split leaves, 40 epochs;
  curve/<student>/e<E>/seed100   the student alone for E epochs on the
                                 5,000-image subset: where validation
                                 flattens sets the benchmark's length;
  tune/<arm>/<setting>/seed100   three settings per arm (pair P1), chosen on
                                 validation by code (`chosen`);
  final/<teacher>-<student>/<arm>/seed<s>  the final grid, seeds 0-4, each
                                 pair a sweep directory that
                                 `python -m adain_kd_jax.experiments.report`
                                 reads;
  tune/kd/t16/seed100            kd's edge extension (tau 16; kd's chosen
                                 tau 8 was its grid's edge), for the
                                 confirmation only;
  confirm/resnet20-resnet8/<arm>/seed<s>  the pre-registered confirmation
                                 (CONFIRMATION.md): five arms, fresh seeds
                                 5-14;
  s1check/<arm>/<setting>/seed100  the S-1 handicap check (CONFIRMATION.md):
                                 larger S-1 weights with a warm-up, and S-1
                                 added to S at S's weight 1;
  gate/<teacher>/e<E>            a wide teacher's first E epochs (the
                                 teacher recipe, 55,000 images): the gate
                                 for AdaIN where the tail can judge the std
                                 (`stats_swap` on its export decides whether
                                 its full training is worth it);
  teacher/wrn_16_2               the full wide teacher, gated again by
                                 `stats_swap` on its export (written to
                                 teacher/wrn_16_2/stats_swap.json);
  p3tune/<arm>/<setting>/seed100, p3final/wrn_16_2-resnet8/<arm>/seed<s>
                                 P3 (CONFIRMATION.md): AdaIN at S-1 where
                                 the tail judges the std, kd and logit_mse;
                                 seeds 0-9.
An arm is a method with fixed extra settings (the AdaIN variants are arms of
the method adain). Every arm but `none` gets the same budget: three
settings on tuning seed 100, which never enters the final grid. P2 reuses
P1's choices (a selection effect the README states).
"""

import json
import os

from adain_kd_jax.experiments.campaign import best_on_val
from adain_kd_jax.experiments.parallel import PlannedRun

CELL = 'configs/fashion_mnist_lowdata.py'
TEACHER = 'resnet20'
P1 = ('resnet20', 'resnet8')
P2 = ('resnet20', 'wrn_16_1')  # Across families: a wide ResNet student.
TUNING_SEED = 100
FINAL_SEEDS = (0, 1, 2, 3, 4)
CURVE = {'resnet8': (20, 40, 80), 'wrn_16_1': (40, 80)}

# CRD's published 16,384 negatives exceed the 5,000-image training set: the
# nearest faithful setting keeps its class-aware sampling with 4,096 (the
# 4,500 images of the other nine classes are enough).
CRD_NEGATIVES = 4096

# The arms: (method, fixed overrides, {setting: overrides}), each with three
# settings around its published or natural value (marked *).
ARMS = {
    'none': ('none', {}, {}),
    'kd': ('kd', {}, {f't{t}': {'loss.temperature': float(t)}
                      for t in (2, 4, 8)}),  # *t4, CE 0.1 + KD 0.9
    'logit_mse': ('logit_mse', {}, {f'w{w}': {'loss.logit_mse': w}
                                    for w in (0.3, 1.0, 3.0)}),  # *w1
    'fitnet': ('fitnet', {'points': (-1,)}, {
        f'w{w}': {'loss.fitnet': float(w)} for w in (30, 100, 300)}),  # *w100
    'at': ('at', {}, {f'w{w}': {'loss.at': float(w)}
                      for w in (300, 1000, 3000)}),  # *w1000
    'stat_l2': ('stat_l2', {'points': (-1,)}, {
        f'w{w}': {'loss.stat_l2': w} for w in (0.3, 1.0, 3.0)}),  # *w1
    'crd': ('crd', {'crd.num_negatives': CRD_NEGATIVES}, {
        f'w{w}': {'loss.crd': w} for w in (0.4, 0.8, 1.6)}),  # *w0.8
    'dkd': ('dkd', {}, {f'b{b}': {'dkd.beta': float(b)}
                        for b in (2, 4, 8)}),  # *b8 (off the CIFAR table)
}
_ADAIN_WEIGHTS = (0.03, 0.1, 0.3)


def _adain_arm(method, fixed, weights=_ADAIN_WEIGHTS, extra=()):
  """An AdaIN arm: fixed overrides, three loss.adain weights (and the
  fields in `extra` set to the same weight)."""
  return (method, fixed, {f'w{w}': {'loss.adain': w,
                                    **{f: w for f in extra}}
                          for w in weights})


ARMS.update({
    # The authors' released form at the last stage: a connector ending in a
    # ReLU, the squared error through the teacher's classifier (AdaIN at S on
    # this pool + fc teacher) plus the mean-only statistics L2, weights 1/1.
    'adain_authors': _adain_arm(
        'adain', {'points': (0,), 'connector_relu': True},
        weights=(0.3, 1.0, 3.0), extra=('loss.stat_mean',)),  # *w1
    # S-1 and S with weights (1, 1): adding S-1 does not weaken S.
    'adain_both_points': _adain_arm(
        'adain', {'points': (-1, 0), 'point_weights': (1.0, 1.0)}),
    'adain_s1_kl': _adain_arm('adain', {'points': (-1,),
                                        'loss.adain_kind': 'kl'}),
    # The variance contrast: the same point and kind, mean only vs both.
    'adain_s1_mean': _adain_arm('adain', {'points': (-1,),
                                          'loss.adain_stats': 'mean'}),
    'adain_s1_both': _adain_arm('adain', {'points': (-1,)}),
    # Today's default form (S, squared error), around its 0.3.
    'adain_default': _adain_arm('adain', {'points': (0,)},
                                weights=(0.1, 0.3, 1.0)),  # *w0.3
    # KD's recipe (CE 0.1 + KD 0.9, tau 4) plus AdaIN at S with its own
    # weights: 0.3 beside CE 0.1 is 10x adain's ratio to CE.
    'adain_kd': _adain_arm('adain_kd', {'points': (0,)}),
})
ADAIN_ARMS = tuple(a for a in ARMS if a.startswith('adain_')
                   and a != 'adain_kd')
# On P2: the baselines, the student alone, adain_kd, the variance pair and
# the AdaIN arm validation ranks best on P1 (`p2_arms`).
P2_FIXED = ('none', 'kd', 'logit_mse', 'fitnet', 'at', 'stat_l2', 'crd',
            'dkd', 'adain_kd', 'adain_s1_mean', 'adain_s1_both')


def _cell(pair, arm):
  method = ARMS[arm][0]
  return f'{CELL}:teacher={pair[0]},student={pair[1]},method={method}'


def _needs(pair):
  return (f'teachers/fashion_mnist_{pair[0]}_55k',)


def _tune_dir(workdir, arm, setting):
  return os.path.join(workdir, f'tune/{arm}/{setting}/seed{TUNING_SEED}')


def chosen(workdir):
  """{arm: overrides} for each arm whose tuning has finished, chosen on the
  validation split alone (the last evaluation's val_accuracy)."""
  out = {}
  for arm, (_, fixed, settings) in ARMS.items():
    if not settings:
      out[arm] = dict(fixed)
      continue
    name = best_on_val({n: [_tune_dir(workdir, arm, n)] for n in settings})
    if name:
      out[arm] = {**fixed, **settings[name]}
  return out


def best_adain_arm(workdir):
  """The AdaIN arm with the best tuned validation top-1 on P1 (None until
  every AdaIN arm has finished tuning)."""
  from adain_kd_jax.experiments import parallel
  best, best_val = None, None
  for arm in ADAIN_ARMS:
    dirs = [_tune_dir(workdir, arm, n) for n in ARMS[arm][2]]
    if not all(os.path.exists(os.path.join(d, 'summary.json')) for d in dirs):
      return None
    val = max(parallel.read_summary(d)['val_accuracy'] for d in dirs)
    if best_val is None or val > best_val:
      best, best_val = arm, val
  return best


def p2_arms(workdir):
  best = best_adain_arm(workdir)
  return P2_FIXED + ((best,) if best and best not in P2_FIXED else ())


def _curve(student, epochs):
  return PlannedRun(f'curve/{student}/e{epochs}/seed{TUNING_SEED}',
                    _cell((TEACHER, student), 'none'),
                    {'num_epochs': float(epochs), 'seed': TUNING_SEED})


def _tune(arm):
  _, fixed, settings = ARMS[arm]
  return [PlannedRun(f'tune/{arm}/{name}/seed{TUNING_SEED}', _cell(P1, arm),
                     {**fixed, **overrides, 'seed': TUNING_SEED},
                     needs=_needs(P1))
          for name, overrides in settings.items()]


def _final(pair, arm, overrides):
  needs = () if arm == 'none' else _needs(pair)
  return [PlannedRun(f'final/{pair[0]}-{pair[1]}/{arm}/seed{seed}',
                     _cell(pair, arm), dict(overrides, seed=seed), needs=needs)
          for seed in FINAL_SEEDS]


# The confirmation (CONFIRMATION.md, committed before its first run): P1,
# fresh seeds never used before, five arms at their chosen settings; kd's
# setting chosen among its three and the tau-16 edge extension.
CONFIRM_SEEDS = tuple(range(5, 15))
CONFIRM_ARMS = ('none', 'kd', 'logit_mse', 'adain_authors', 'dkd')
KD_EXTENSION = {'t16': {'loss.temperature': 16.0}}
# The S-1 handicap check, on the tuning seed: three settings an arm, the
# AdaIN weight warmed up linearly over the first S1_WARMUP_EPOCHS.
S1_WARMUP_EPOCHS = 4.0
S1_CHECK = {
    # The variance pair at larger weights, each the same three.
    'adain_s1_mean_warm': ('adain', {
        'points': (-1,), 'loss.adain_stats': 'mean',
        'loss.adain_warmup_epochs': S1_WARMUP_EPOCHS},
                           {f'w{w}': {'loss.adain': w} for w in (0.3, 1.0, 3.0)}),
    'adain_s1_both_warm': ('adain', {
        'points': (-1,), 'loss.adain_warmup_epochs': S1_WARMUP_EPOCHS},
                           {f'w{w}': {'loss.adain': w} for w in (0.3, 1.0, 3.0)}),
    # S-1 added to S with S at weight 1 (adain_default's and adain_authors'
    # S weight); the S-1 point weight takes adain_s1_both's three settings.
    'adain_both_points_s1': ('adain', {'points': (-1, 0), 'loss.adain': 1.0}, {
        f's1w{w}': {'point_weights': (w, 1.0)} for w in (0.03, 0.1, 0.3)}),
}
# A check arm gets final seeds only if its best validation top-1 on the
# tuning seed beats the student alone's by more than this (points).
S1_FINAL_MARGIN = 0.5
# The variance pair of the check (mean only, mean and std), run at one
# shared weight wherever both go on (here and on P3).
S1_VARIANCE_PAIR = ('adain_s1_mean_warm', 'adain_s1_both_warm')


def _s1_dir(workdir, arm, setting):
  return os.path.join(workdir, f's1check/{arm}/{setting}/seed{TUNING_SEED}')


def confirm_kd(workdir):
  """kd's overrides for the confirmation: the best on validation among its
  three tuned settings and the tau-16 extension (None until all four have
  finished; a tie keeps the earlier setting, so tau 16 must win)."""
  _, fixed, settings = ARMS['kd']
  settings = {**settings, **KD_EXTENSION}
  name = best_on_val({n: [_tune_dir(workdir, 'kd', n)] for n in settings})
  return {**fixed, **settings[name]} if name else None


def _confirm(workdir):
  runs = [PlannedRun(f'tune/kd/{n}/seed{TUNING_SEED}', _cell(P1, 'kd'),
                     {**o, 'seed': TUNING_SEED}, needs=_needs(P1))
          for n, o in KD_EXTENSION.items()]
  done = chosen(workdir)
  done['kd'] = confirm_kd(workdir)
  for arm in CONFIRM_ARMS:
    if done.get(arm) is None:
      continue
    runs += [PlannedRun(f'confirm/{P1[0]}-{P1[1]}/{arm}/seed{seed}',
                        _cell(P1, arm), dict(done[arm], seed=seed),
                        needs=() if arm == 'none' else _needs(P1))
             for seed in CONFIRM_SEEDS]
  return runs


def _s1_check():
  runs = []
  for arm, (method, fixed, settings) in S1_CHECK.items():
    runs += [PlannedRun(f's1check/{arm}/{name}/seed{TUNING_SEED}',
                        f'{CELL}:teacher={P1[0]},student={P1[1]},'
                        f'method={method}',
                        {**fixed, **overrides, 'seed': TUNING_SEED},
                        needs=_needs(P1))
             for name, overrides in settings.items()]
  return runs


# A teacher whose tail after S and S-1 is non-linear in the statistics: a
# wide ResNet (pre-activation: BN + ReLU before pooling in its head), first
# GATE_EPOCHS epochs only; stats_swap on the export is the gate.
WIDE_TEACHER = 'wrn_16_2'
GATE_EPOCHS = 4


# The student alone's validation top-1 on the tuning seed, 40 epochs: the
# bar of the S-1 check's rule.
_NONE_CURVE = 'curve/resnet8/e40/seed100'
# The arm whose S weight adain_both_points_s1 matches (S alone at weight 1,
# its tuned setting): its contrast if it passes (CONFIRMATION.md, addendum).
S1_POINTS_REFERENCE = ('adain_default', 'w1.0')


def s1_check_results(workdir):
  """{arm: (best setting, its validation top-1, passed)} of the S-1 check
  (None until all its runs and the student alone's have finished). Like
  every choice here, validation top-1 is the last evaluation's; an arm
  passes when its best setting beats the student alone's by more than
  S1_FINAL_MARGIN points."""
  from adain_kd_jax.experiments import parallel
  bar_dir = os.path.join(workdir, _NONE_CURVE)
  if not os.path.exists(os.path.join(bar_dir, 'summary.json')):
    return None
  bar = 100 * parallel.read_summary(bar_dir)['val_accuracy']
  out = {}
  for arm, (_, _, settings) in S1_CHECK.items():
    dirs = {n: _s1_dir(workdir, arm, n) for n in settings}
    name = best_on_val({n: [d] for n, d in dirs.items()})
    if name is None:
      return None
    val = 100 * parallel.read_summary(dirs[name])['val_accuracy']
    out[arm] = (name, val, val - bar > S1_FINAL_MARGIN)
  return out


def _s1_final(workdir):
  """The confirmation seeds for what passed the S-1 check: the variance
  pair at the one weight with the best validation averaged over the two
  arms if either passed; adain_both_points_s1 and the arm at its S weight
  (S1_POINTS_REFERENCE) if it passed."""
  results = s1_check_results(workdir)
  if results is None:
    return []
  cells = []
  pair = S1_VARIANCE_PAIR
  if results[pair[0]][2] or results[pair[1]][2]:
    weight = best_on_val({n: [_s1_dir(workdir, a, n) for a in pair]
                          for n in S1_CHECK[pair[0]][2]})
    cells += [(a, S1_CHECK[a], weight) for a in pair]
  if results['adain_both_points_s1'][2]:
    arm = 'adain_both_points_s1'
    cells.append((arm, S1_CHECK[arm], results[arm][0]))
    ref, setting = S1_POINTS_REFERENCE
    cells.append((ref, ARMS[ref], setting))
  runs = []
  for arm, (method, fixed, settings), name in cells:
    runs += [PlannedRun(f'confirm/{P1[0]}-{P1[1]}/{arm}/seed{seed}',
                        f'{CELL}:teacher={P1[0]},student={P1[1]},'
                        f'method={method}',
                        {**fixed, **settings[name], 'seed': seed},
                        needs=_needs(P1))
             for seed in CONFIRM_SEEDS]
  return runs


def _gate():
  return [PlannedRun(f'gate/{WIDE_TEACHER}/e{GATE_EPOCHS}',
                     f'configs/fashion_mnist_teacher.py:{WIDE_TEACHER}',
                     {'num_epochs': float(GATE_EPOCHS)})]


# AdaIN where the tail can judge the std (CONFIRMATION.md, "The wide
# teacher"): the gate passed at S-1 only, so P3's AdaIN arms work there.
# The full teacher is gated again (stats_swap on its export, written to
# P3_GATE_FILE under the workdir) before any of its students is planned.
P3 = (WIDE_TEACHER, 'resnet8')
P3_SEEDS = tuple(range(10))
P3_GATE_FILE = f'teacher/{WIDE_TEACHER}/stats_swap.json'
P3_GATE_RATIO = 0.1  # std replaced over mean replaced, at S-1.
P3_VARIANCE_PAIR = S1_VARIANCE_PAIR
P3_ARMS = {
    'none': ARMS['none'],
    # kd's three around P1's choice (tau 8, its grid's edge there).
    'kd': ('kd', {}, {f't{t}': {'loss.temperature': float(t)}
                      for t in (4, 8, 16)}),
    'logit_mse': ARMS['logit_mse'],
    # AdaIN at S-1, squared error, weights 0.3/1/3 warmed up over 4 epochs:
    # mean only and mean and std, run at one shared weight.
    **{arm: S1_CHECK[arm] for arm in P3_VARIANCE_PAIR},
}


def p3_gate(workdir):
  """Whether the full wide teacher passes the gate at S-1 (None until its
  statistics swap is written)."""
  path = os.path.join(workdir, P3_GATE_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    table = json.load(f)
  point = next(p for p in table['points'] if p['relative'] == -1)
  return point['std'] >= P3_GATE_RATIO * point['mean']


def _p3_cell(arm):
  return (f'{CELL}:teacher={P3[0]},student={P3[1]},'
          f'method={P3_ARMS[arm][0]}')


def _p3_tune_dir(workdir, arm, setting):
  return os.path.join(workdir, f'p3tune/{arm}/{setting}/seed{TUNING_SEED}')


def p3_chosen(workdir):
  """{arm: overrides} of P3's arms whose tuning has finished, chosen on
  validation; the variance pair shares the weight whose validation,
  averaged over the two arms, is best."""
  out = {}
  for arm, (_, fixed, settings) in P3_ARMS.items():
    if arm in P3_VARIANCE_PAIR:
      dirs = {n: [_p3_tune_dir(workdir, a, n) for a in P3_VARIANCE_PAIR]
              for n in settings}
    else:
      dirs = {n: [_p3_tune_dir(workdir, arm, n)] for n in settings}
    name = best_on_val(dirs) if settings else None
    if not settings or name:
      out[arm] = {**fixed, **(settings[name] if name else {})}
  return out


def _p3(workdir):
  """The wide teacher (40 epochs, exported), then, once it passes the gate
  again, P3's tuning on seed 100 and its final grid on seeds 0-9."""
  runs = [PlannedRun(f'teacher/{WIDE_TEACHER}',
                     f'configs/fashion_mnist_teacher.py:{WIDE_TEACHER}',
                     export_to=f'teachers/fashion_mnist_{WIDE_TEACHER}_55k')]
  if not p3_gate(workdir):
    return runs
  for arm, (_, fixed, settings) in P3_ARMS.items():
    runs += [PlannedRun(f'p3tune/{arm}/{name}/seed{TUNING_SEED}',
                        _p3_cell(arm),
                        {**fixed, **overrides, 'seed': TUNING_SEED},
                        needs=_needs(P3))
             for name, overrides in settings.items()]
  for arm, overrides in p3_chosen(workdir).items():
    runs += [PlannedRun(f'p3final/{P3[0]}-{P3[1]}/{arm}/seed{seed}',
                        _p3_cell(arm), dict(overrides, seed=seed),
                        needs=() if arm == 'none' else _needs(P3))
             for seed in P3_SEEDS]
  return runs


def get_plan(workdir):
  """The runs in priority order: the decisive arms first (none, kd,
  logit_mse, the AdaIN arms, adain_kd), then the other baselines; a final
  run once its arm's tuning has chosen."""
  runs = [PlannedRun(f'teacher/{TEACHER}',
                     f'configs/fashion_mnist_teacher.py:{TEACHER}',
                     export_to=f'teachers/fashion_mnist_{TEACHER}_55k')]
  runs += [_curve(s, e) for s, epochs in CURVE.items() for e in epochs]
  decisive = ('kd', 'logit_mse', *ADAIN_ARMS, 'adain_kd')
  others = tuple(a for a in ARMS if a not in decisive and a != 'none')
  done = chosen(workdir)
  for group in (('none',) + decisive, others):
    for arm in group:
      runs += _tune(arm)
    for arm in group:
      if arm in done:
        runs += _final(P1, arm, done[arm])
  for arm in p2_arms(workdir):
    if arm in done:
      runs += _final(P2, arm, done[arm])
  return (runs + _confirm(workdir) + _s1_check() + _s1_final(workdir)
          + _gate() + _p3(workdir))
