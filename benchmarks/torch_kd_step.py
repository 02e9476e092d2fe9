r"""The KD training step in PyTorch on the CPU: the reference for the CPU gap.

  python benchmarks/torch_kd_step.py --teacher=wrn_40_2 --student=wrn_16_2 \
      --batch_sizes=64,128 --threads=2 [--channels_last]

Prints JSON: ms per step (median after warm-up) of the same KD step as
`benchmarks/step_throughput.py`'s `kd` entry (frozen teacher forward in eval
mode, student forward/backward in train mode, CE 0.1 + KD 0.9 with tau 4, SGD
momentum 0.9 with weight decay 5e-4), written with the benchmark zoo's
PyTorch models (`tests/torch_zoo.py`, layer for layer RepDistiller's). Needs
`pip install -r requirements-torch.txt`.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import output  # pylint: disable=g-import-not-at-top,wrong-import-position

_TEACHER = flags.DEFINE_string('teacher', 'wrn_40_2', 'Teacher model.')
_STUDENT = flags.DEFINE_string('student', 'wrn_16_2', 'Student model.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['64', '128'], 'Batches.')
_THREADS = flags.DEFINE_integer('threads', 2, 'torch.set_num_threads.')
_CHANNELS_LAST = flags.DEFINE_bool('channels_last', True,
                                   'Use the channels-last memory format.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first.')


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from tests import torch_zoo  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(_THREADS.value)
  torch.manual_seed(0)
  fmt = (torch.channels_last if _CHANNELS_LAST.value else
         torch.contiguous_format)
  teacher = torch_zoo.create(_TEACHER.value, 100).eval().to(memory_format=fmt)
  student = torch_zoo.create(_STUDENT.value, 100).train().to(
      memory_format=fmt)
  for p in teacher.parameters():
    p.requires_grad_(False)
  opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9,
                        weight_decay=5e-4)
  out = {'torch': torch.__version__, 'threads': _THREADS.value,
         'channels_last': _CHANNELS_LAST.value, 'teacher': _TEACHER.value,
         'student': _STUDENT.value, 'results': {}}
  for batch_size in (int(b) for b in _BATCH_SIZES.value):
    x = torch.randn(batch_size, 3, 32, 32).to(memory_format=fmt)
    y = torch.randint(0, 100, (batch_size,))
    times = []
    for i in range(_WARMUP.value + _STEPS.value):
      start = time.perf_counter()
      with torch.no_grad():
        z_t = teacher(x)
      z_s = student(x)
      tau = 4.0
      kd = F.kl_div(F.log_softmax(z_s / tau, 1), F.softmax(z_t / tau, 1),
                    reduction='batchmean') * tau**2
      loss = 0.1 * F.cross_entropy(z_s, y) + 0.9 * kd
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      if i >= _WARMUP.value:
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    out['results'][str(batch_size)] = {
        'kd_ms_per_step': ms, 'images_per_s': batch_size / ms * 1000,
        'ms_min': 1000 * min(times), 'ms_max': 1000 * max(times)}
  output.emit(out, None)


if __name__ == '__main__':
  app.run(main)
