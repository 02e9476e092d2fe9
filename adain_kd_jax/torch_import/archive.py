"""The CIFAR-100 teachers as one archive: mdistiller's `cifar_teachers.tar`.

RepDistiller's own download of its teachers has been gone since 2022; the
same checkpoints survive as the `cifar_teachers.tar` asset of mdistiller's
`checkpoints` release (github.com/megvii-research/mdistiller/releases/tag/
checkpoints). Its members are `.../<arch>_vanilla/ckpt_epoch_240.pth`, one
per teacher of the CRD table. `import_archive` takes the archive as it was
downloaded (no unpacking first) and writes every teacher it holds as an
export `OUT_DIR/<arch>`, through `zoo.import_checkpoint` (strict: every
tensor used, every variable filled, every shape checked, the class count
against the data set's) with the test accuracy the CRD table publishes.
"""

import os
import re
import tarfile
import tempfile
from typing import Callable

from adain_kd_jax.torch_import import key_maps

# The CRD table's teachers (Tian et al., ICLR 2020, Table 1 and 2): test
# top-1 on CIFAR-100 as a fraction; configs/cifar100_distill.py's PUBLISHED
# holds the same numbers in percent (tests check that they agree).
PUBLISHED_TEST_ACCURACY = {
    'wrn_40_2': 0.7561, 'resnet56': 0.7234, 'resnet110': 0.7431,
    'resnet32x4': 0.7942, 'vgg13': 0.7464, 'ResNet50': 0.7934,
}
_MEMBER = re.compile(r'(?:^|/)([A-Za-z0-9_]+?)_vanilla/ckpt_epoch_240\.pth$')


def teacher_members(archive: str) -> dict[str, tarfile.TarInfo]:
  """{arch: member} of the teacher checkpoints in the archive."""
  with tarfile.open(archive) as tar:
    members = {}
    for member in tar.getmembers():
      match = _MEMBER.search(member.name)
      if member.isfile() and match and match[1] in key_maps.TORCH_MODELS:
        members[match[1]] = member
  return members


def import_archive(archive: str, out_dir: str, import_checkpoint: Callable,
                   *, dataset: str = 'cifar100',
                   log: Callable[[str], None] = print) -> dict[str, str]:
  """Imports every teacher of `archive` into `out_dir/<arch>`.

  `import_checkpoint` is `zoo.import_checkpoint` (passed in: `python -m
  adain_kd_jax.torch_import.zoo` runs that module as __main__, and importing
  it again here would define its flags twice).

  A teacher whose export already exists is left as it is, so that the
  command can be run again after a failure.

  Returns:
    {arch: 'imported' | 'already there'}.

  Raises:
    ValueError: the file is not a tar archive or holds no teacher checkpoint.
  """
  if not tarfile.is_tarfile(archive):
    raise ValueError(f'{archive!r} is not a tar archive; download '
                     "mdistiller's cifar_teachers.tar again.")
  members = teacher_members(archive)
  if not members:
    raise ValueError(f'{archive!r} holds no <arch>_vanilla/ckpt_epoch_240.pth'
                     ' of a known model; is it cifar_teachers.tar?')
  status = {}
  with tarfile.open(archive) as tar, tempfile.TemporaryDirectory() as tmp:
    for arch, member in sorted(members.items()):
      out = os.path.join(out_dir, arch)
      if os.path.isfile(os.path.join(out, 'teacher.json')):
        status[arch] = 'already there'
        log(f'{arch}: {out} is already there; skipped.')
        continue
      # Read the member's bytes, never its path: nothing lands outside tmp.
      path = os.path.join(tmp, f'{arch}.pth')
      with tar.extractfile(member) as src, open(path, 'wb') as dst:
        dst.write(src.read())
      meta = import_checkpoint(
          arch, path, out, dataset=dataset,
          test_accuracy=PUBLISHED_TEST_ACCURACY.get(arch),
          source=f'{os.path.abspath(archive)}:{member.name}')
      os.remove(path)
      status[arch] = 'imported'
      log(f'{arch}: {meta["num_classes"]} classes, test accuracy '
          f'{meta["test_accuracy"]} (published) -> {out}')
  return status
