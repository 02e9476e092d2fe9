r"""One 3x3 convolution's three parts, timed: forward, input and weight gradient.

  python benchmarks/conv_parts.py [--batch=64] [--shapes=32x32,16x64,8x128] \
      [--torch] [--steps=20] [--out=FILE.json]

Prints JSON: for each shape HxC (an H x H x C NHWC input, C output channels,
stride 1, padding 1, the convolutions of wrn_16_2's three stages at the
recipe's batch 64) the median (and least) ms of `fwd` (the convolution), `dx` (its input
gradient) and `dw` (its weight gradient), each a separately jitted function
of XLA's own autodiff, and GFLOP/s (2 * B * H * H * 9 * C * C per part).
With --torch, the same parts in PyTorch (channels-last, `torch.get_num_threads()`
threads): `F.conv2d` and `aten.convolution_backward` with one gradient asked
for at a time (the kernels autograd runs). This is where the CPU gap of the
distillation step lives (benchmarks/README.md): XLA:CPU's weight gradient is
a convolution over transposed operands with an H x W window.

XLA_FLAGS are XLA's defaults plus `--cpu_ynnpack` (host_setup), as in
training; `--nocpu_ynnpack` times XLA:CPU's own convolutions.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from adain_kd_jax import host_setup
from benchmarks import output
# pylint: enable=g-import-not-at-top,wrong-import-position

_BATCH = flags.DEFINE_integer('batch', 64, 'Batch size.')
_SHAPES = flags.DEFINE_list('shapes', ['32x32', '16x64', '8x128'],
                            'HxC: spatial size and channels (in = out).')
_TORCH = flags.DEFINE_bool('torch', False, 'Also time PyTorch (needs torch).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed calls (after one warm-up).')
_OUT = flags.DEFINE_string('out', '', 'Also write the JSON here.')


def _median_ms(call, steps):
  """(median, min) ms of `steps` calls after one warm-up call."""
  call()  # Warm-up (and compilation).
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times), 1000 * min(times)


def _jax_parts(batch, size, channels, steps):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.standard_normal(
      (batch, size, size, channels), np.float32))
  w = jax.numpy.asarray(0.1 * rng.standard_normal(
      (3, 3, channels, channels), np.float32))
  g = jax.numpy.asarray(rng.standard_normal(
      (batch, size, size, channels), np.float32))

  def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  parts = {
      'fwd': jax.jit(conv),
      'dx': jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
      'dw': jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
  }
  args = {'fwd': (x, w), 'dx': (x, w, g), 'dw': (x, w, g)}
  return {name: _median_ms(lambda f=f, a=args[name]: jax.block_until_ready(
      f(*a)), steps) for name, f in parts.items()}


def _torch_parts(batch, size, channels, steps):
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top,invalid-name

  torch.manual_seed(0)
  cl = torch.channels_last
  x = torch.randn(batch, channels, size, size).to(memory_format=cl)
  w = (0.1 * torch.randn(channels, channels, 3, 3)).to(memory_format=cl)
  g = torch.randn(batch, channels, size, size).to(memory_format=cl)

  def backward(mask):
    return torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

  with torch.no_grad():
    return {
        'fwd': _median_ms(lambda: F.conv2d(x, w, padding=1), steps),
        'dx': _median_ms(lambda: backward([True, False, False]), steps),
        'dw': _median_ms(lambda: backward([False, True, False]), steps),
    }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  host_setup.set_xla_cpu_flags()  # Before JAX is imported.
  import jax  # pylint: disable=g-import-not-at-top

  batch = _BATCH.value
  out = {'jax_version': jax.__version__,
         'device_kind': jax.devices()[0].device_kind,
         'host_cpus': os.cpu_count(),
         'xla_flags': os.environ.get('XLA_FLAGS', ''), 'batch': batch,
         'steps': _STEPS.value, 'results': {}}
  if _TORCH.value:
    import torch  # pylint: disable=g-import-not-at-top
    out['torch_version'] = torch.__version__
    out['torch_threads'] = torch.get_num_threads()
  for shape in _SHAPES.value:
    size, channels = (int(v) for v in shape.split('x'))
    gflop = 2 * batch * size * size * 9 * channels * channels / 1e9
    entry = {'gflop_per_part': gflop}
    frameworks = {'jax': _jax_parts}
    if _TORCH.value:
      frameworks['torch'] = _torch_parts
    for framework, parts in frameworks.items():
      ms = parts(batch, size, channels, _STEPS.value)
      entry[framework] = {
          name: {'ms': t, 'ms_min': t_min, 'gflop_per_s': gflop / t * 1000}
          for name, (t, t_min) in ms.items()}
      print(f'{shape} {framework}: ' + ', '.join(
          f'{n} {t:.2f} ms' for n, (t, _) in ms.items()), file=sys.stderr)
    out['results'][shape] = entry
  output.emit(out, _OUT.value)


if __name__ == '__main__':
  app.run(main)
