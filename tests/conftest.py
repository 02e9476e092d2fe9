"""Test set-up: eight simulated CPU devices, float32, a compilation cache.

Must run before JAX is imported anywhere, so it sets the flags at import time.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (
      _flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.path.expanduser("~"), ".cache", "adain_kd_jax_jit"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
