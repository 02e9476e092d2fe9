r"""How much a teacher's tail uses the channel statistics of its own map.

  python -m adain_kd_jax.experiments.stats_swap \
      --config=configs/fashion_mnist_lowdata.py:teacher=resnet20 \
      --split=val --examples=2000 --out=results/x/stats_swap.json

The diagnostic behind AdaIN's variance claim. At each point k of the teacher,
its own per-example statistics are replaced by their batch average, and the
tail's squared error to the teacher's own logits says how much the output
depended on them:
  mean: AdaIN(f_t; mean over the batch of mu_t, sigma_t)  (own std kept);
  std:  AdaIN(f_t; mu_t, mean over the batch of sigma_t)  (own mean kept);
  both: both replaced.
A point whose `std` error is near 0 (every point of a pool + fc tail at S)
gives AdaIN nothing to judge the student's std by; a point where `std` is
small beside `mean` judges it weakly. Pure part: `swap_errors`; the rest
loads the teacher and the data through `run.create_run`.
"""

import os
from typing import Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from adain_kd_jax import cli
from adain_kd_jax import losses
from adain_kd_jax.training import run_record

SWAPS = ('mean', 'std', 'both')


def swap_errors(f_t_NHWC: jax.Array, z_t_NK: jax.Array,
                tail_fn: Callable[[jax.Array], jax.Array]
                ) -> dict[str, jax.Array]:
  """The tail's squared error to `z_t` with batch-averaged statistics.

  Args:
    f_t_NHWC: the teacher's map at a point, shape (N, H, W, C), H*W >= 2.
    z_t_NK: the teacher's logits on it, `tail_fn(f_t)`, shape (N, K).
    tail_fn: the teacher from that point on, (N, H, W, C) -> (N, K).

  Returns:
    {'mean', 'std', 'both'} -> `mean_{n,j} (tail(AdaIN(f_t; ...)) - z_t)^2`,
    with the named statistic(s) replaced by their batch average.
  """
  mu_NC, sigma_NC = losses.channel_stats(f_t_NHWC)
  mu_bar = jnp.broadcast_to(jnp.mean(mu_NC, axis=0), mu_NC.shape)
  sigma_bar = jnp.broadcast_to(jnp.mean(sigma_NC, axis=0), sigma_NC.shape)
  targets = {'mean': (mu_bar, sigma_NC), 'std': (mu_NC, sigma_bar),
             'both': (mu_bar, sigma_bar)}
  z_t_NK = losses.as_float(z_t_NK)
  return {name: jnp.mean(jnp.square(
      losses.as_float(tail_fn(losses.adain(f_t_NHWC, mu, sigma))) - z_t_NK))
          for name, (mu, sigma) in targets.items()}


def teacher_table(config, split: str, examples: int, batch_size: int = 500
                  ) -> dict:
  """`swap_errors` at every stage of `config.teacher`, averaged over the
  first `examples` images of `split` ('val' or 'test') in batches."""
  # pylint: disable=g-import-not-at-top
  from adain_kd_jax.data import augment
  from adain_kd_jax.training import run as run_lib
  # pylint: enable=g-import-not-at-top
  run = run_lib.create_run(config, None)
  run.close()
  teacher, variables = run.distiller.teacher, run.teacher_vars
  images = run.data.splits[split][0][:examples]
  stages = range(1, teacher.num_stages + 1)

  @jax.jit
  def batch_errors(x):
    x = augment.preprocess_eval(x, mean=run.dataset_info.mean,
                                std=run.dataset_info.std)
    z_t, feats = teacher.apply(variables, x, train=False)
    return {k: swap_errors(feats[f'stage{k}'], z_t, lambda h, k=k: (
        teacher.apply(variables, h, start=k, train=False, method='tail')))
            for k in stages}

  sums, count = {}, 0
  for start in range(0, len(images), batch_size):
    part = images[start:start + batch_size]
    errors = jax.device_get(batch_errors(part))
    for k, by_swap in errors.items():
      for name, value in by_swap.items():
        sums[(k, name)] = sums.get((k, name), 0.0) + float(value) * len(part)
    count += len(part)
  num_stages = teacher.num_stages
  return {'teacher': config.teacher, 'split': split, 'examples': count,
          'teacher_checkpoint': config.teacher_checkpoint,
          'points': [{'stage': k, 'relative': k - num_stages,
                      **{name: sums[(k, name)] / count for name in SWAPS}}
                     for k in stages]}


def to_markdown(table: dict) -> str:
  """The table as markdown: one row a point, S-relative names."""
  lines = [f'Teacher {table["teacher"]}, {table["examples"]} '
           f'{table["split"]} images: mean squared error of its logits when '
           'its own per-example statistics at a point are replaced by their '
           'batch average.', '',
           '| point | mean replaced | std replaced | both replaced | '
           'std / mean |', '|---|---:|---:|---:|---:|']
  for p in table['points']:
    name = 'S' if p['relative'] == 0 else f'S{p["relative"]}'
    ratio = p['std'] / p['mean'] if p['mean'] > 0 else float('nan')
    lines.append(f'| {name} (stage {p["stage"]}) | {p["mean"]:.4f} | '
                 f'{p["std"]:.4f} | {p["both"]:.4f} | {ratio:.3f} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  table = teacher_table(cli.config_value(_CONFIG), _SPLIT.value,
                        _EXAMPLES.value)
  text = to_markdown(table)
  print(text, end='')
  if _OUT.value:
    run_record.write_json(_OUT.value, table)
    run_record.write_text(os.path.splitext(_OUT.value)[0] + '.md', text)


if __name__ == '__main__':
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'A distillation config: its teacher, data and split.')
  _SPLIT = flags.DEFINE_enum('split', 'val', ['val', 'test'],
                             'The images the errors are averaged over.')
  _EXAMPLES = flags.DEFINE_integer('examples', 2000, 'How many of them.')
  _OUT = flags.DEFINE_string('out', '', 'Write the table here (JSON; and a '
                             '.md beside it).')
  cli.run(main)
