r"""Trains a teacher or distils a student: adain_kd_jax/main.py, from a clone.

  python train.py --config=configs/default.py --workdir=runs/default

The same as `adain-kd-train` (installed) or `python -m adain_kd_jax.main`.
"""

from adain_kd_jax import main as _train

main = _train.main

if __name__ == '__main__':
  _train.run()
