"""The checks and casts every loss family shares.

`as_float` casts to the compute dtype (float32, or float64 for float64
inputs: the reference tests run in float64); `check_4d` and
`check_same_channels_and_batch` raise one clear ValueError for maps that do
not pair up, before anything is computed.
"""

import jax
import jax.numpy as jnp


def _compute_dtype(dtype) -> jnp.dtype:
  """Returns float32, or float64 where `dtype` already is float64."""
  return jnp.promote_types(dtype, jnp.float32)


def as_float(x: jax.Array) -> jax.Array:
  """Casts `x` to its compute dtype: float32, or float64 if it is float64."""
  x = jnp.asarray(x)
  return x.astype(_compute_dtype(x.dtype))


def check_4d(name: str, f: jax.Array) -> None:
  """Raises ValueError unless `f` is a 4-D (N, H, W, C) feature map."""
  if jnp.ndim(f) != 4:
    raise ValueError(
        f'{name} must be a 4-D feature map of shape (N, H, W, C); '
        f'got shape {jnp.shape(f)}.')


def check_same_channels_and_batch(f_t_NHWC: jax.Array,
                                  f_s_NHWC: jax.Array) -> None:
  """Raises ValueError unless teacher and student maps pair up.

  Args:
    f_t_NHWC: teacher feature map, shape (N, Ht, Wt, C).
    f_s_NHWC: student feature map, shape (N, Hs, Ws, C).
  """
  check_4d('f_t', f_t_NHWC)
  check_4d('f_s', f_s_NHWC)
  n_t, _, _, c_t = jnp.shape(f_t_NHWC)
  n_s, _, _, c_s = jnp.shape(f_s_NHWC)
  if c_t != c_s:
    raise ValueError(
        f'Channel mismatch: teacher feature f_t has {c_t} channels, student '
        f'feature f_s has {c_s} (shapes {jnp.shape(f_t_NHWC)} and '
        f'{jnp.shape(f_s_NHWC)}). Pass the student feature through the '
        'connector (1x1 conv to the teacher channel count) first.')
  if n_t != n_s:
    raise ValueError(
        f'Batch mismatch: f_t has batch size {n_t}, f_s has {n_s} (shapes '
        f'{jnp.shape(f_t_NHWC)} and {jnp.shape(f_s_NHWC)}).')
