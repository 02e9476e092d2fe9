"""Every command of README.md, docs/ and results/*/README.md: its entry point
and flags exist, and it runs from the command line as a user types it, at
toy size on mock data, or is listed with the reason it cannot run here.

The commands run in a user's clone made in a temporary folder (the code
linked, teachers/ and the results it writes copied) with a home whose
~/.cache holds mock Fashion-MNIST files where `python -m
adain_kd_jax.data.fetch` puts the real ones. Toy switches are appended
(a later flag wins); a command's flag is replaced only where the table says
why.
"""

import functools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import doc_commands
from tests.conftest import ROOT

# The size switches appended to a train.py command (two steps of 32).
TOY = ('--config.num_train_steps=2', '--config.batch_size=32',
       '--config.eval_batch_size=64', '--config.train_limit=256',
       '--config.test_limit=64')
MOCK = ('--config.mock_data=64',)

# Commands the suite does not run, and why. Their entry points and flags are
# still checked (test_every_documented_flag_exists).
NOT_RUN = {
    'python -m adain_kd_jax.experiments.campaign '
    '--plan=results/cifar100/plan.py --workdir=/shared/runs '
    '--slurm=--gres=gpu:1 --time=04:00:00 --slurm_throttle=16 [--grid]':
        'needs a GPU cluster and CIFAR-100; tests/test_slurm.py submits a '
        'toy plan through the same --slurm path to the local cluster',
    'python -m adain_kd_jax.experiments.campaign '
    '--plan=results/cifar100/plan.py --workdir=/shared/runs --list':
        "a cluster's shared workdir; tests/test_slurm.py checks --list",
    'scripts/slurm_local.sh start': 'started by .ci/run and by '
                                    'tests/test_slurm.py',
    'salloc --nodes=2 --ntasks-per-node=1 --gres=gpu:4 --time=04:00:00':
        'needs a GPU cluster of two nodes',
    'srun python train.py --config=configs/default.py '
    '--workdir=/shared/runs/big': 'inside that allocation; '
        'tests/test_slurm.py runs `srun -n 2 python train.py` on the local '
        'cluster',
    'python -m adain_kd_jax.experiments.campaign --toy '
    '--plan=results/fashion_mnist_benchmark/plan.py --workdir=/tmp/toy '
    '--only=teacher/wrn_40_2,tune/kd/ --slurm=--time=00:30:00':
        'needs a running SLURM; tests/test_slurm.py submits a toy plan',
    'python -m adain_kd_jax.experiments.campaign --toy '
    '--plan=results/fashion_mnist_benchmark/plan.py --workdir=/tmp/toy '
    '--only=teacher/wrn_40_2,tune/kd/ --list':
        "lists the toy submission's states; tests/test_slurm.py checks them",
    'python -m adain_kd_jax.experiments.report /tmp/toy/tune/kd':
        "reports the toy submission's runs; tests/test_slurm.py reports the "
        'runs its toy plan trained on SLURM',
    'python3 -m venv .venv': 'installs; tests/test_package.py installs the '
                             'package',
    '. .venv/bin/activate': 'installs',
    'pip install -r requirements.txt': 'installs; tests/test_package.py',
    'python -m pytest -q -n 2': 'this suite',
    'python3 -m venv .venv-prepare': 'prepares CIFAR-100 (TensorFlow)',
    '. .venv-prepare/bin/activate': 'prepares CIFAR-100 (TensorFlow)',
    'pip install tensorflow tensorflow-datasets': 'prepares CIFAR-100',
    'tfds build cifar100 --file_format=array_record '
    '--data_dir=$HOME/tensorflow_datasets': 'downloads CIFAR-100',
    'pip install torch==2.13.0 --index-url '
    'https://download.pytorch.org/whl/cpu': 'installs torch',
    'python3.12 -m venv .venv312': 'the Python 3.12 stack',
    '. .venv312/bin/activate': 'the Python 3.12 stack',
    'pip install -r requirements-py312.txt': 'the Python 3.12 stack',
    'pip install -e . --no-deps': 'installs; tests/test_package.py',
    'python3.12 -m venv .venv': 'the GPU stack',
    'pip install -r requirements-cuda.txt': 'the GPU stack',
    'python -c import jax; print(jax.devices())': 'lists GPUs',
    'gcloud compute tpus tpu-vm ssh NAME --worker=all --command cd '
    'adain_kd_jax && ADAIN_KD_DISTRIBUTED=1 python train.py --config=... '
    '--workdir=/mnt/shared/W': 'a TPU pod slice',
    'python train.py --workdir=/tmp/mock_imagenet '
    '--config=configs/mock.py:imagenet_distill,method=kd': 'a minute of '
        'compiling ResNet-34 and -18 on two cores; '
        'tests/test_imagenet_train.py trains imagenet_distill.py at toy size',
    'python train.py --config=configs/teacher.py --workdir=runs/t '
    '--config.model=resnet56': 'the teacher command run in the usage '
        'scenario with a deeper model (half a minute of compiling); '
        'tests/test_models.py builds resnet56',
    # What the 2-core CI would pay twice: the same configs on mock data run
    # in the install and cifar100 scenarios below.
    'python train.py --workdir=runs/c100/wrn_16_2/adain/seed0 '
    '--config=configs/cifar100_distill.py:teacher=wrn_40_2,student=wrn_16_2,'
    'method=adain': 'needs CIFAR-100 and an imported teacher; install.md\'s '
                    'mock dry run runs this config on mock data',
    'python train.py --config=configs/cifar100_teacher.py:model=wrn_40_2 '
    '--workdir=runs/c100_t/wrn_40_2': 'needs CIFAR-100; run_table.py\'s dry '
                                      'run trains this teacher on mock data',
}
# Commands whose every part is a placeholder or that need what a CI machine
# lacks (torch, downloaded checkpoints, several nodes): prefix -> reason.
NOT_RUN_PREFIX = {
    'python -m adain_kd_jax.torch_import.zoo': 'needs the downloaded '
        'teachers; tests/test_import_torch.py runs the importer, --archive '
        'included, on checkpoints it makes where torch is installed',
    'python train.py --config=... --workdir=W': 'placeholders for a '
        'config and hosts; tests/test_multihost.py runs two processes',
}


def _user_clone(tmp_path):
  """A clone as a user has it (the code linked, what commands write copied)
  and a home with mock Fashion-MNIST where fetch puts the real files."""
  from adain_kd_jax.data import idx  # pylint: disable=g-import-not-at-top
  clone, home = tmp_path / 'clone', tmp_path / 'home'
  clone.mkdir()
  for name in ('train.py', 'adain_kd_jax', 'configs', 'pyproject.toml'):
    os.symlink(os.path.join(ROOT, name), clone / name)
  shutil.copytree(os.path.join(ROOT, 'teachers'), clone / 'teachers')
  # Copies, not links: the documented commands write here.
  shutil.copytree(os.path.join(ROOT, 'results'), clone / 'results',
                  ignore=lambda d, names: ['runs'] if 'runs' in names else [])
  runs = 'results/fashion_mnist_lowdata/runs'
  for stage in ('final/resnet20-resnet8', 'final/resnet20-wrn_16_1',
                'confirm/resnet20-resnet8', 'gate/wrn_16_2/e4',
                'p3final/wrn_16_2-resnet8'):
    shutil.copytree(os.path.join(ROOT, runs, stage), clone / runs / stage)
  data = home / '.cache/adain_kd_jax/fashion-mnist/usr/share/datasets'
  data = data / 'fashion-mnist'
  data.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for prefix, n in (('train', 1000), ('t10k', 200)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 128, (n, 28, 28)) + 12 * labels[:, None, None]
    idx.write_idx(str(data / f'{prefix}-images-idx3-ubyte.gz'),
                  images.astype(np.uint8))
    idx.write_idx(str(data / f'{prefix}-labels-idx1-ubyte.gz'), labels)
  # The compilation cache the tests share, so that a clone compiles once.
  os.symlink(os.path.expanduser('~/.cache/adain_kd_jax_jit'),
             home / '.cache' / 'adain_kd_jax_jit')
  return clone, home


def _documented(text):
  """The words of the documented command `text` (fails if no page has it)."""
  for command in _all_commands():
    if command.text == text:
      return list(command.argv)
  raise AssertionError(f'No page documents `{text}` any more: update '
                       'tests/test_documented_commands.py.')


def _with(argv, *extra):
  """`argv` with `extra` flags appended, replacing flags of the same name."""
  names = {e.split('=')[0] for e in extra}
  return [w for w in argv if w.split('=')[0] not in names] + list(extra)


def _run(clone, home, argv, timeout=600):
  """Runs a command in the clone as a user's shell would; returns it."""
  env = dict(os.environ, HOME=str(home), PYTHONPATH=str(clone),
             PYTHONUNBUFFERED='1')
  env.pop('XLA_FLAGS', None)
  tmp = str(clone.parent)
  argv = [w.replace('/tmp/', f'{tmp}/tmp/') for w in argv]
  if argv[0] == 'python':
    argv[0] = sys.executable
  proc = subprocess.run(argv, cwd=clone, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-3000:])
  return proc


@functools.cache
def _all_commands():
  return tuple(doc_commands.documented_commands())


@functools.cache
def _flags_of(entry):
  return doc_commands.help_flags(entry)


_TABLE = 'python results/cifar100/run_table.py'
_TABLE_TOY = ('--workdir=/tmp/c100_toy', '--methods=none,kd', '--seeds=0',
              '--toy', '--set=mock_data=64')
_LOWDATA_REPORTS = (
    'python -m adain_kd_jax.experiments.report --nostats --paired_with='
    'adain_authors,adain_s1_both '
    'results/fashion_mnist_lowdata/runs/final/resnet20-resnet8',
    'python -m adain_kd_jax.experiments.report --notensorboard --paired_with='
    'adain_authors,adain_s1_both --name=report_decisive --rows=none,kd,'
    'logit_mse,adain_kd,adain_authors,adain_default,adain_both_points,'
    'adain_s1_kl,adain_s1_mean,adain_s1_both '
    'results/fashion_mnist_lowdata/runs/final/resnet20-resnet8',
    'python -m adain_kd_jax.experiments.report --nostats --notensorboard '
    '--paired_with=adain_authors,adain_s1_both '
    'results/fashion_mnist_lowdata/runs/final/resnet20-resnet8',
    'python -m adain_kd_jax.experiments.report --notensorboard --paired_with='
    'adain_authors,adain_s1_both '
    'results/fashion_mnist_lowdata/runs/final/resnet20-wrn_16_1',
    'python results/fashion_mnist_lowdata/confirm_verdict.py',
    'python -m adain_kd_jax.experiments.report --nostats --notensorboard '
    '--paired_with= results/fashion_mnist_lowdata/runs/confirm/'
    'resnet20-resnet8',
    'python results/fashion_mnist_lowdata/s1_points_verdict.py',
    'python results/fashion_mnist_lowdata/p3_verdict.py',
    'python -m adain_kd_jax.experiments.report --nostats --notensorboard '
    '--paired_with= results/fashion_mnist_lowdata/runs/p3final/'
    'wrn_16_2-resnet8')

# Each scenario: (documented command, what the suite appends), in order, in
# one clone. Runs share their workdirs where the docs do.
SCENARIOS = {
    'readme': [
        ('python -m adain_kd_jax.data.fetch', ()),
        ('python train.py --config=configs/default.py --workdir=runs/default',
         TOY),
        ('python -m adain_kd_jax.experiments.report runs/default', ()),
    ],
    'usage': [
        ('python train.py --config=configs/teacher.py '
         '--workdir=runs/teacher_resnet20', TOY),
        ('cp -r runs/teacher_resnet20/export teachers/fashion_mnist_resnet20',
         ()),
        ('python train.py --config=configs/default.py --workdir=runs/kd '
         '--config.method=kd --config.seed=1', TOY),
    ],
    # docs/data.md: the example files, a run on each kind, the reports.
    'own_data': [
        ('python -m adain_kd_jax.data.examples --folder=/tmp/my_images '
         '--npz=/tmp/my_set.npz', ()),
        ('python train.py --config=configs/teacher.py --workdir=/tmp/own/folder'
         ' --config.model=resnet8 --config.dataset=folder:/tmp/my_images '
         '--config.image_fit=crop:16x16 --config.holdout=40', TOY),
        ('python train.py --config=configs/teacher.py --workdir=/tmp/own/npz '
         '--config.model=resnet8 --config.dataset=npz:/tmp/my_set.npz '
         '--config.holdout=40', TOY),
        ('python -m adain_kd_jax.experiments.report /tmp/own/folder', ()),
        ('python -m adain_kd_jax.experiments.report /tmp/own/npz', ()),
        ('python train.py --config=configs/teacher.py --workdir=/tmp/own/tfds '
         '--config.model=resnet8 --config.dataset=tfds:cifar10 '
         '--config.image_fit=resize:24x24 --config.mock_data=64', TOY),
    ],
    # Two methods, seed 0: each method compiles its own step (about 20 s
    # each here), the other seeds run the same programs; every method's step
    # is tested in tests/test_distill.py and the sweep's table in
    # tests/test_sweep_report.py.
    'sweep': [
        ('python -m adain_kd_jax.experiments.sweep --config=configs/default.py'
         ' --methods=none,kd,stat_l2,adain,adain_kd --seeds=0,1,2 '
         '--workdir=runs/sweep', TOY + ('--methods=kd,adain', '--seeds=0')),
        ('python -m adain_kd_jax.experiments.report runs/sweep', ()),
    ],
    'install_mock': [
        ('python train.py --workdir=/tmp/mock_c100 --config=configs/mock.py:'
         'cifar100_distill,teacher=wrn_40_2,student=wrn_16_2,method=adain', ()),
    ],
    # The dry run as typed; the other three on its workdir, its row, methods
    # and seed, so that they find every run finished and write the tables.
    'cifar100_table': [
        (_TABLE + ' --workdir=/tmp/c100_toy --rows=wrn_40_2-wrn_16_2 '
         '--methods=none,kd --seeds=0 --toy --set=mock_data=64', ()),
        (_TABLE + ' --report_only', ('--workdir=/tmp/c100_toy',)),
        (_TABLE + ' --rows=wrn_40_2-wrn_16_2 --methods=none,kd,adain',
         _TABLE_TOY),
        (_TABLE + ' --workdir=results/cifar100/runs --parallel=4 '
         '--set=device_data=True,steps_per_call=16',
         _TABLE_TOY + ('--rows=wrn_40_2-wrn_16_2', '--set=device_data=True,'
                       'steps_per_call=16,mock_data=64')),
    ],
    # The campaign's teacher at toy size, then the plan listed; the reports
    # on copies of the committed runs.
    'lowdata': [
        ('python -m adain_kd_jax.experiments.campaign '
         '--plan=results/fashion_mnist_lowdata/plan.py '
         '--workdir=results/fashion_mnist_lowdata/runs --parallel=1',
         ('--toy', '--workdir=/tmp/toy', '--only=teacher/')),
        ('python -m adain_kd_jax.experiments.campaign '
         '--plan=results/fashion_mnist_lowdata/plan.py '
         '--workdir=results/fashion_mnist_lowdata/runs --parallel=8 '
         '--set=device_data=True,steps_per_call=16',
         ('--toy', '--workdir=/tmp/toy', '--list')),
        ('python -m adain_kd_jax.experiments.stats_swap '
         '--config=configs/fashion_mnist_lowdata.py:teacher=resnet20 '
         '--split=val --examples=5000 '
         '--out=results/fashion_mnist_lowdata/stats_swap.json',
         ('--examples=64', '--config.holdout=200',
          '--config.train_per_class=50')),
        ('python -m adain_kd_jax.experiments.stats_swap '
         '--config=configs/fashion_mnist_lowdata.py:teacher=wrn_16_2 '
         '--config.teacher_checkpoint=results/fashion_mnist_lowdata/runs/gate/'
         'wrn_16_2/e4/export --split=val --examples=5000 '
         '--out=results/fashion_mnist_lowdata/gate/stats_swap_wrn_16_2_e4.json',
         ('--examples=64', '--config.holdout=200',
          '--config.train_per_class=50')),
        ('python -m adain_kd_jax.experiments.stats_swap '
         '--config=configs/fashion_mnist_lowdata.py:teacher=wrn_16_2 '
         '--split=val --examples=5000 --out=results/fashion_mnist_lowdata/'
         'runs/teacher/wrn_16_2/stats_swap.json',
         ('--examples=64', '--config.holdout=200',
          '--config.train_per_class=50')),
    ] + [(text, ()) for text in _LOWDATA_REPORTS],
}


def test_every_documented_command_runs_or_says_why_not():
  """Each shell command of the pages is run by a scenario here or listed in
  NOT_RUN with its reason; nothing listed is gone from the pages."""
  run = {text for steps in SCENARIOS.values() for text, _ in steps}
  texts = {c.text: c.page for c in _all_commands()}
  missing = [f'{page}: `{text}`' for text, page in texts.items()
             if text not in run and text not in NOT_RUN
             and not text.startswith(tuple(NOT_RUN_PREFIX))]
  assert not missing, ('Documented but neither run nor listed in NOT_RUN: '
                       + '; '.join(missing))
  stale = [t for t in (run | set(NOT_RUN)) if t not in texts]
  assert not stale, f'Listed here but in no page: {stale}'


def test_every_documented_flag_exists():
  """Every project command of the pages (shell blocks and prose) names an
  entry point that exists and only flags it defines."""
  commands = _all_commands() + tuple(
      doc_commands.documented_commands(inline=True))
  assert not doc_commands.problems(commands, _flags_of)


def test_a_broken_page_fails_the_checks():
  """A page naming a missing flag, module and script, and a command no
  scenario runs, is caught: the checks can fail."""
  page = '\n'.join([
      '```sh', 'python train.py --config=configs/default.py \\',
      '  --workdir=runs/x --no_such_flag=1   # a comment',
      'python -m adain_kd_jax.experiments.no_such_module --workdir=w && \\',
      '  python results/no_such_script.py', '```',
      'Then `adain-kd-report --no_such_report_flag DIR`.'])
  commands = (doc_commands.page_commands(page, 'BROKEN.md')
              + doc_commands.inline_commands(page, 'BROKEN.md'))
  assert [c.text for c in commands] == [
      'python train.py --config=configs/default.py --workdir=runs/x '
      '--no_such_flag=1',
      'python -m adain_kd_jax.experiments.no_such_module --workdir=w',
      'python results/no_such_script.py',
      'adain-kd-report --no_such_report_flag DIR']
  found = doc_commands.problems(commands, _flags_of)
  assert [line.split('`: ')[1] for line in found] == [
      'train.py has no flag --no_such_flag',
      'there is no module adain_kd_jax.experiments.no_such_module',
      'there is no script results/no_such_script.py',
      'adain_kd_jax.experiments.report has no flag --no_such_report_flag']
  with pytest.raises(AssertionError, match='No page documents'):
    _documented('python train.py --config=configs/default.py '
                '--no_such_flag=1')


@pytest.mark.parametrize('scenario', sorted(SCENARIOS))
def test_documented_commands_run(scenario, tmp_path):
  """The scenario's documented commands, in order, at toy size, exit 0."""
  clone, home = _user_clone(tmp_path)
  for text, extra in SCENARIOS[scenario]:
    _run(clone, home, _with(_documented(text), *extra))
