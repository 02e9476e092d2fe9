"""Figures and TensorBoard logs of finished runs (matplotlib, Agg backend).

  * `accuracy_curves(runs, path)`: test accuracy per epoch, mean and min..max
    band over the seeds of each method.
  * `insertion_point_stats(config, workdir, images)` and
    `stats_scatter(teacher, before, after, path)`: the per-channel mean and
    std of the student's features (through the connector) against the
    teacher's, at the AdaIN insertion point, before and after distillation.
  * `write_tensorboard(workdir)`: WORKDIR/metrics.jsonl as TensorBoard event
    files in WORKDIR/tb/ (tensorboardX, no TensorFlow), so that
    `tensorboard --logdir SWEEP_DIR` shows every run of a sweep. Runs write
    the same events live (metric_writer.py); this rewrites them from
    metrics.jsonl, e.g. for runs of an older version.

JAX is imported only by `insertion_point_stats`.
"""

import functools
import glob
import json
import os
from typing import Any, Sequence

import matplotlib
import numpy as np

from adain_kd_jax.training import metric_writer

matplotlib.use('Agg')
# pylint: disable-next=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of WORKDIR/metrics.jsonl ([] if absent)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def split_curve(metrics: Sequence[dict[str, Any]], split: str = 'test'
                ) -> tuple[np.ndarray, np.ndarray]:
  """(epochs, accuracies) of one run on `split`, by step (the last wins)."""
  by_step = {r['step']: r for r in metrics if r.get('split') == split}
  steps = sorted(by_step)
  return (np.array([by_step[s]['epoch'] for s in steps], float),
          np.array([by_step[s]['accuracy'] for s in steps], float))


def accuracy_curves(runs: Sequence[dict[str, Any]], path: str) -> None:
  """Test accuracy (%) per epoch: per method, mean over seeds and a band.

  Args:
    runs: dicts with 'method' and 'metrics' (the records of metrics.jsonl),
      e.g. from `report.collect`.
    path: the PNG to write.
  """
  methods = list(dict.fromkeys(r['method'] for r in runs))
  if all(len(split_curve(r['metrics'])[0]) <= 1 for r in runs):
    _final_accuracy_bars(runs, methods, path)
    return
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for method in methods:
    curves = [split_curve(r['metrics']) for r in runs
              if r['method'] == method]
    curves = [c for c in curves if len(c[0])]
    if not curves:
      continue
    # Seeds of one method evaluate at the same epochs; where one stopped
    # early, the others still count.
    epochs = np.array(sorted({round(e, 6) for c in curves for e in c[0]}))
    table = np.full((len(curves), len(epochs)), np.nan)
    for i, (e, acc) in enumerate(curves):
      table[i, np.searchsorted(epochs, np.round(e, 6))] = acc
    table *= 100
    mean = np.nanmean(table, axis=0)
    line, = ax.plot(epochs, mean, marker='o' if len(epochs) < 30 else None,
                    markersize=3, label=f'{method} (n={len(curves)})')
    if len(curves) > 1:
      ax.fill_between(epochs, np.nanmin(table, axis=0),
                      np.nanmax(table, axis=0), color=line.get_color(),
                      alpha=0.2, linewidth=0)
  ax.set_xlabel('epoch')
  ax.set_ylabel('test top-1 accuracy (%)')
  ax.set_title('Test accuracy: mean over seeds, band = min..max')
  ax.grid(alpha=0.3)
  if methods:
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _final_accuracy_bars(runs, methods, path) -> None:
  """accuracy_curves where no run evaluated more than once: a curve would be
  a dot per method, so a bar per method (mean over seeds) with its value,
  each seed a dot on it."""
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, method in enumerate(methods):
    accs = [100 * split_curve(r['metrics'])[1][0] for r in runs
            if r['method'] == method and len(split_curve(r['metrics'])[0])]
    if not accs:
      continue
    mean = float(np.mean(accs))
    ax.bar(i, mean, color=f'C{i}', alpha=0.8)
    ax.plot([i] * len(accs), accs, 'k.', markersize=6)
    ax.annotate(f'{mean:.2f}', (i, mean), ha='center', va='bottom',
                xytext=(0, 3), textcoords='offset points')
  epochs = sorted({round(split_curve(r['metrics'])[0][0], 3) for r in runs
                   if len(split_curve(r['metrics'])[0])})
  ax.set_xticks(range(len(methods)),
                [f'{m} (n={sum(r["method"] == m for r in runs)})'
                 for m in methods])
  ax.set_ylabel('test top-1 accuracy (%)')
  ax.set_title('Test accuracy after '
               + (f'{epochs[0]:g} epoch(s)' if len(epochs) == 1 else
                  'training') + ' (one evaluation per run; dots: seeds)')
  ax.grid(alpha=0.3, axis='y')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def stats_scatter(teacher_stats: dict[str, Any], student_before: dict[str, Any],
                  student_after: dict[str, Any], path: str,
                  title: str = '') -> None:
  """Student (through the connector) vs. teacher channel statistics.

  Two panels, channel means and channel stds: one point per channel, x the
  teacher's value, y the student's, before (initialisation) and after
  distillation, and the line y = x where they would match.

  Args:
    teacher_stats: {'mean': [C], 'std': [C]} of the teacher's feature.
    student_before: the same for the connector output at initialisation.
    student_after: the same after training.
    path: the PNG to write.
    title: a figure title (e.g. the method and the insertion point).
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
  for ax, key, label in ((axes[0], 'mean', 'channel mean'),
                         (axes[1], 'std', 'channel std')):
    x = np.asarray(teacher_stats[key], float)
    for stats, name, color in ((student_before, 'before (init)', 'tab:gray'),
                               (student_after, 'after distillation',
                                'tab:red')):
      ax.scatter(x, np.asarray(stats[key], float), s=14, alpha=0.7,
                 color=color, label=name)
    values = np.concatenate([x] + [np.asarray(s[key], float) for s in
                                   (student_before, student_after)])
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], 'k--', linewidth=1,
            label='y = x')
    ax.set_xlabel(f'teacher {label}')
    ax.set_ylabel(f'student (connector) {label}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def insertion_point_stats(config, workdir: str, images: np.ndarray
                          ) -> dict[str, Any]:
  """Channel statistics at the first insertion point, before and after.

  Builds the run of `config` (`run.create_run`: data, teacher, the freshly
  initialised state), restores the newest checkpoint in `workdir`, and runs
  both on `images` (raw uint8 NHWC, e.g. test images; normalised as in
  evaluation) in inference mode. The statistics are `losses.channel_stats`
  of the teacher's feature at the first insertion point (`config.points[0]`)
  and of the connector output there, averaged over the examples. "before"
  is the state the run starts from (step 0, the run's seed).

  Returns:
    {'point': 'stage<k>', 'step': the checkpoint's step,
     'teacher' / 'before' / 'after': {'mean': [C], 'std': [C]} (numpy)}.

  Raises:
    ValueError: the method has no connector (none, kd).
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from adain_kd_jax import losses
  from adain_kd_jax.data import augment
  from adain_kd_jax.training import checkpoints
  from adain_kd_jax.training import run as run_lib
  # pylint: enable=g-import-not-at-top
  with run_lib.mock_data(config):
    run = run_lib.create_run(config, None)
  run.close()
  distiller = run.distiller
  connectors = distiller.adapter('connector')
  if connectors is None:
    raise ValueError(f'config.method={config.method!r} has no connector, so '
                     'no insertion point statistics.')
  name = 'stage%d' % next(a.stages[0] for _, t, _ in distiller.terms
                          for a in t.needs.adapters if a.key == 'connector')
  ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'),
                                     keep=config.keep_checkpoints)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints.')
    after, _ = ckpt.restore(jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=x.sharding), run.state))
  finally:
    ckpt.close()
  x = augment.preprocess_eval(jnp.asarray(images),
                              mean=run.dataset_info.mean,
                              std=run.dataset_info.std)

  @jax.jit
  def student_stats(state, x):
    _, feats = distiller.student.apply(
        {'params': state.params['student'],
         'batch_stats': state.batch_stats['student']}, x, train=False)
    out = connectors.apply(
        {'params': state.params['connector'],
         'batch_stats': state.batch_stats['connector']}, feats, train=False)
    return [s.mean(0) for s in losses.channel_stats(out[name])]

  _, t_feats = jax.jit(functools.partial(distiller.teacher.apply,
                                         train=False))(run.teacher_vars, x)
  as_dict = lambda ms: {'mean': np.asarray(ms[0]), 'std': np.asarray(ms[1])}
  return {'point': name, 'step': int(after.step),
          'teacher': as_dict([s.mean(0) for s in
                              losses.channel_stats(t_feats[name])]),
          'before': as_dict(student_stats(run.state, x)),
          'after': as_dict(student_stats(after, x))}


def write_tensorboard(workdir: str) -> str | None:
  """Converts WORKDIR/metrics.jsonl to TensorBoard event files in WORKDIR/tb.

  Every numeric field of a record becomes the scalar `<split>/<field>` at its
  step (e.g. `test/accuracy`, `train/kd`; `metric_writer.scalars`). Event
  files written before (by this or live by the run) are replaced, so running
  it again does not duplicate the curves.

  Returns:
    The tb directory, or None when there is no metrics.jsonl.
  """
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  records = read_metrics(workdir)
  if not records:
    return None
  logdir = os.path.join(workdir, metric_writer.TB_DIR)
  os.makedirs(logdir, exist_ok=True)
  for old in glob.glob(os.path.join(logdir, metric_writer.EVENT_GLOB)):
    os.remove(old)
  writer = SummaryWriter(logdir=logdir)
  try:
    for r in records:
      for tag, value in metric_writer.scalars(r).items():
        writer.add_scalar(tag, value, global_step=r['step'])
  finally:
    writer.close()
  return logdir
