"""AdaIN knowledge distillation in JAX/Flax."""
