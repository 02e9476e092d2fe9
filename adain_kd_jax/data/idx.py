"""Reader and writer for the IDX file format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number, then one big-endian uint32 size per
dimension, then the data in row-major order, big-endian:

  bytes 0-1: zero
  byte 2:    element type (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
             0x0D float32, 0x0E float64)
  byte 3:    number of dimensions

We read the format ourselves rather than through tfds because the Debian
package `dataset-fashion-mnist` re-compresses the files, so tfds' checksums
reject them, and tfds would need TensorFlow to prepare them anyway.
"""

import gzip
import os
import struct
from typing import Union

import numpy as np

PathLike = Union[str, os.PathLike]

# Type code -> big-endian numpy dtype, as in LeCun's description of the format.
_CODE_TO_DTYPE = {
    0x08: np.dtype('u1'),
    0x09: np.dtype('i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_GZIP_MAGIC = b'\x1f\x8b'


class IdxFormatError(ValueError):
  """The file is not a well-formed IDX file."""


def _read_bytes(path: PathLike) -> bytes:
  """Returns the file's bytes, decompressed if it is gzip (by content)."""
  with open(path, 'rb') as f:
    raw = f.read()
  # Decide by the gzip magic, not the name: some mirrors ship decompressed
  # files that still end in .gz, or the other way around.
  if not raw.startswith(_GZIP_MAGIC):
    return raw
  try:
    return gzip.decompress(raw)
  except (EOFError, OSError, gzip.BadGzipFile) as e:
    raise IdxFormatError(
        f'{os.fspath(path)}: gzip data is corrupt or truncated ({e}). '
        'Download or extract the file again.') from e


def read_idx(path: PathLike) -> np.ndarray:
  """Reads an IDX file (plain or gzip-compressed) into a numpy array.

  Args:
    path: the file, e.g. `train-images-idx3-ubyte.gz`.

  Returns:
    A writable array in native byte order with the file's dimensions, e.g.
    uint8 of shape (60000, 28, 28) for Fashion-MNIST training images.

  Raises:
    IdxFormatError: bad magic number, unknown type code, or a data section
      whose length does not match the header (a truncated file).
  """
  name = os.fspath(path)
  data = _read_bytes(path)
  if len(data) < 4:
    raise IdxFormatError(
        f'{name}: only {len(data)} bytes, too short for an IDX header. The '
        'file is truncated; download or extract it again.')
  zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
  if zero0 != 0 or zero1 != 0 or code not in _CODE_TO_DTYPE:
    raise IdxFormatError(
        f'{name}: bad IDX magic number {data[:4].hex()} (expected 0000 '
        f'followed by a type code in '
        f'{sorted(hex(c) for c in _CODE_TO_DTYPE)} and the number of '
        'dimensions). Is this an IDX file such as train-images-idx3-ubyte?')
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise IdxFormatError(
        f'{name}: truncated header: {ndim} dimensions need {header_len} '
        f'bytes, the file has {len(data)}. Download or extract it again.')
  shape = struct.unpack(f'>{ndim}I', data[4:header_len])
  dtype = _CODE_TO_DTYPE[code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  actual = len(data) - header_len
  if actual != expected:
    kind = 'truncated' if actual < expected else 'has trailing bytes'
    raise IdxFormatError(
        f'{name}: file {kind}: header says shape {shape} of {dtype.name} '
        f'({expected} data bytes), found {actual}. Download or extract it '
        'again.')
  array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
  # astype copies, which also makes the result writable (frombuffer on bytes
  # is read-only) and native-endian for JAX.
  return array.astype(dtype.newbyteorder('='))


def write_idx(path: PathLike, array: np.ndarray) -> None:
  """Writes `array` as an IDX file, gzip-compressed if `path` ends in .gz.

  Args:
    path: destination file.
    array: an array of one of the IDX element types (uint8, int8, int16,
      int32, float32, float64).

  Raises:
    ValueError: the dtype has no IDX type code, or too many dimensions.
  """
  array = np.asarray(array)
  native_to_code = {
      dtype.newbyteorder('='): code for code, dtype in _CODE_TO_DTYPE.items()}
  code = native_to_code.get(array.dtype.newbyteorder('='))
  if code is None:
    raise ValueError(
        f'write_idx: dtype {array.dtype} has no IDX type code; cast to one '
        'of uint8, int8, int16, int32, float32, float64 first.')
  if array.ndim > 255:
    raise ValueError(f'write_idx: {array.ndim} dimensions, IDX allows 255.')
  header = bytes([0, 0, code, array.ndim])
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  big_endian = np.ascontiguousarray(array, dtype=_CODE_TO_DTYPE[code])
  payload = header + big_endian.tobytes()
  if os.fspath(path).endswith('.gz'):
    payload = gzip.compress(payload)
  with open(path, 'wb') as f:
    f.write(payload)
