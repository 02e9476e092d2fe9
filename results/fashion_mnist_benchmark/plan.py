"""Every run of the Fashion-MNIST benchmark, in the order they are trained.

  bash results/fashion_mnist_benchmark/run_chunk.sh OUT_DIR   # one chunk

Names are directories under runs/; a run whose summary.json is there is
finished and skipped, and for it the committed config.json is what ran.
  teacher/<model>            teachers on all 60,000 training images
                             (configs/fashion_mnist_teacher.py);
  curve/<student>/e<E>/seed<s>  the student alone for E epochs: does it
                             converge at the benchmark's 30?
  design/<variant>/seed<s>   the AdaIN design space on the validation split
                             (pair P1), tuning seeds 100 and 101;
  tune/<method>/<setting>/seed100  six settings per baseline (pair P1);
  final/<teacher>-<student>/<method>/seed<s>  the final grid, seeds 0-4
                             (each pair's directory is a sweep directory
                             that `python -m adain_kd_jax.experiments.report`
                             reads);
                             the student alone now, the other methods once
                             tuning has chosen their settings.
A run waits for its teacher; the runner fills free slots with the next run
that is ready, in this order. Tuning seeds (100+) are never used in the final
grid.
"""

import os

from adain_kd_jax.experiments.campaign import best_on_val
from adain_kd_jax.experiments.parallel import PlannedRun

DISTILL = 'configs/fashion_mnist_distill.py'
TEACHERS = ('wrn_40_2', 'resnet56')
# Every setting is tuned on P1 (across families: a wide ResNet teaching a
# thin CIFAR ResNet). ShuffleV1 was dropped: on the H200 it trained at
# ~1,300 images/s where resnet8 did ~8,200 under the same load.
P1 = ('wrn_40_2', 'resnet8')
PAIRS = (P1, ('wrn_40_2', 'wrn_16_1'), ('resnet56', 'resnet8'))
TUNING_SEEDS = (100, 101)
FINAL_SEEDS = (0, 1, 2, 3, 4)
S = 3  # Stages of every model in the pairs.

# AdaIN design space around the base (S-1, mse, both statistics, no L_fm):
# insertion point x tail loss, each kind at its own weight (the squared
# error on logits starts ~10x the others); then, at the base, mean-only,
# std-only and the feature-matching term.
ADAIN_POINTS = {'pS': ((S,), (1.0,)), 'pS-1': ((S - 1,), (1.0,)),
                'pboth': ((S - 1, S), (0.5, 0.5))}
ADAIN_KINDS = {'mse': 0.3, 'kl': 1.0, 'ce': 1.0}
ADAIN_BASE = {'points': (S - 1,), 'point_weights': (1.0,),
              'loss.adain_kind': 'mse', 'loss.adain': 0.3}
ADAIN_ABLATIONS = {
    'pS-1_mse_mean': {'loss.adain_stats': 'mean'},
    'pS-1_mse_std': {'loss.adain_stats': 'std'},
    'pS-1_mse_fm10': {'loss.fm': 10.0},
    'pS-1_mse_fm100': {'loss.fm': 100.0},
}

# Six settings per baseline, around the published one (marked *).
TUNE = {
    'kd': {f't{t}_ce{ce}': {'loss.temperature': float(t), 'loss.ce': ce,
                            'loss.kd': kd}
           for t in (2, 4, 8) for ce, kd in ((0.1, 0.9), (1.0, 1.0))},  # *t4_ce0.1
    'fitnet': {f'w{w}_p{p}': {'loss.fitnet': float(w), 'points': (p,)}
               for w in (10, 100, 1000) for p in (2, 3)},  # *w100_p2
    'at': {f'w{w}': {'loss.at': float(w)}
           for w in (100, 300, 1000, 3000, 10000, 30000)},  # *w1000
    'stat_l2': {f'w{w}_p{p}': {'loss.stat_l2': float(w), 'points': (p,)}
                for w in (1, 10, 100) for p in (2, 3)},
    'crd': {f'w{w}_t{t}': {'loss.crd': w, 'crd.temperature': t}
            for w in (0.4, 0.8, 1.6) for t in (0.07, 0.1)},  # *w0.8_t0.07
    'dkd': {f'b{b}_t{t}': {'dkd.beta': float(b), 'loss.temperature': float(t)}
            for b in (2, 4, 8) for t in (2, 4)},  # *b8_t4
}


def _cell(pair, method):
  return f'{DISTILL}:teacher={pair[0]},student={pair[1]},method={method}'


def _needs(pair):
  return (f'teachers/fashion_mnist_{pair[0]}',)


def _curve(student, epochs, seed):
  return PlannedRun(f'curve/{student}/e{epochs}/seed{seed}', _cell(P1, 'none'),
                    {'model': student, 'num_epochs': float(epochs),
                     'seed': seed})


def design_variants():
  """{variant name: overrides} of the AdaIN design space."""
  variants = {}
  for pname, (points, point_weights) in ADAIN_POINTS.items():
    for kind, weight in ADAIN_KINDS.items():
      variants[f'{pname}_{kind}'] = {
          'points': points, 'point_weights': point_weights,
          'loss.adain_kind': kind, 'loss.adain': weight}
  for name, overrides in ADAIN_ABLATIONS.items():
    variants[name] = {**ADAIN_BASE, **overrides}
  return variants


def _design(seed):
  return [PlannedRun(f'design/{name}/seed{seed}', _cell(P1, 'adain'),
                     dict(overrides, seed=seed), needs=_needs(P1))
          for name, overrides in design_variants().items()]


def chosen(workdir):
  """{method: overrides} for each method whose tuning has finished.

  Chosen on the validation split alone (campaign.best_on_val): a baseline's
  setting on tuning seed 100, AdaIN's variant on the mean of seeds 100 and
  101. adain_kd takes AdaIN's variant and KD's temperature and weights, so
  that it differs from kd by the AdaIN term alone.
  """
  out = {}
  for method, settings in TUNE.items():
    name = best_on_val({n: [os.path.join(workdir, f'tune/{method}/{n}/'
                                         f'seed{TUNING_SEEDS[0]}')]
                        for n in settings})
    if name:
      out[method] = settings[name]
  variants = design_variants()
  name = best_on_val({n: [os.path.join(workdir, f'design/{n}/seed{seed}')
                          for seed in TUNING_SEEDS] for n in variants})
  if name:
    out['adain'] = variants[name]
    if 'kd' in out:
      out['adain_kd'] = {**variants[name], **out['kd']}
  return out


def _tune(method):
  seed = TUNING_SEEDS[0]
  return [PlannedRun(f'tune/{method}/{name}/seed{seed}', _cell(P1, method),
                     dict(overrides, seed=seed), needs=_needs(P1))
          for name, overrides in TUNE[method].items()]


def get_plan(workdir):
  """The runs, in priority order; the final grid of a method once its
  tuning has finished in `workdir`."""
  runs = [PlannedRun(f'teacher/{m}', f'configs/fashion_mnist_teacher.py:{m}',
                     export_to=f'teachers/fashion_mnist_{m}') for m in TEACHERS]
  # Finished in the first chunk (15-epoch schedule, 20-epoch teachers).
  runs += [PlannedRun(f'teacher/{m}_e20',
                      f'configs/fashion_mnist_teacher.py:{m}',
                      {'num_epochs': 20.0}) for m in TEACHERS]
  runs += [_curve(s, 15, seed) for s in ('resnet8', 'resnet20')
           for seed in (*FINAL_SEEDS, TUNING_SEEDS[0])]
  runs += [_curve(s, 30, TUNING_SEEDS[0]) for s in ('resnet8', 'resnet20')]
  # The benchmark's schedule (30) against twice as long.
  runs += [_curve('resnet8', 60, TUNING_SEEDS[0]),
           _curve('wrn_16_1', 30, TUNING_SEEDS[0]),
           _curve('wrn_16_1', 60, TUNING_SEEDS[0])]
  runs += _design(TUNING_SEEDS[0]) + _tune('kd') + _design(TUNING_SEEDS[1])
  # The student alone: no tuning choice, no teacher; fills free slots.
  runs += [PlannedRun(f'final/{t}-{s}/none/seed{seed}', _cell((t, s), 'none'),
                      {'seed': seed}) for t, s in PAIRS for seed in FINAL_SEEDS]
  for method in TUNE:
    if method != 'kd':
      runs += _tune(method)
  for method, overrides in chosen(workdir).items():
    runs += [PlannedRun(f'final/{t}-{s}/{method}/seed{seed}',
                        _cell((t, s), method),
                        dict(overrides, seed=seed), needs=_needs((t, s)))
             for t, s in PAIRS for seed in FINAL_SEEDS]
  return runs
