"""PyTorch checkpoints of the model zoo -> exported Flax teachers (no torch).

  * `zoo`: the command (`python -m adain_kd_jax.torch_import.zoo`);
  * `archive`: mdistiller's cifar_teachers.tar, every teacher in one go;
  * `convert`: a state dict -> our variables, strictly;
  * `key_maps`: state-dict keys <-> our variable paths, per model family.
"""
