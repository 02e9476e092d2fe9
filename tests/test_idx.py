"""Tests of the IDX reader and writer, on files the tests write."""

import gzip

import numpy as np
import pytest

from adain_kd_jax.data import idx


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_round_trip_uint8(tmp_path, suffix):
  """uint8 images survive write_idx/read_idx, plain and gzip."""
  images = np.random.default_rng(0).integers(
      0, 256, (5, 28, 28), dtype=np.uint8)
  path = tmp_path / f'images-idx3-ubyte{suffix}'
  idx.write_idx(path, images)
  out = idx.read_idx(path)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, images)
  assert out.flags.writeable


def test_gz_is_really_compressed_and_header_is_standard(tmp_path):
  """A .gz file is gzip, and its header is the documented IDX layout."""
  labels = np.arange(10, dtype=np.uint8)
  idx.write_idx(tmp_path / 'l.gz', labels)
  raw = gzip.decompress((tmp_path / 'l.gz').read_bytes())
  assert raw[:8] == bytes([0, 0, 0x08, 1, 0, 0, 0, 10])
  assert raw[8:] == labels.tobytes()


@pytest.mark.parametrize('dtype', ['i1', 'i2', 'i4', 'f4', 'f8'])
def test_round_trip_other_types(tmp_path, dtype):
  """The other standard type codes read back as native-endian arrays."""
  array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
  idx.write_idx(tmp_path / 'a', array)
  out = idx.read_idx(tmp_path / 'a')
  assert out.dtype == np.dtype(dtype)
  np.testing.assert_array_equal(out, array)


def test_big_endian_sizes(tmp_path):
  """Sizes above 255 are read as big-endian uint32."""
  array = np.zeros((300, 2), np.uint8)
  idx.write_idx(tmp_path / 'a', array)
  assert idx.read_idx(tmp_path / 'a').shape == (300, 2)


def test_bad_magic(tmp_path):
  """A file that does not start with 00 00 <type> <ndim> is rejected."""
  path = tmp_path / 'bad'
  path.write_bytes(b'\x12\x34\x08\x01' + bytes(8))
  with pytest.raises(idx.IdxFormatError, match='bad IDX magic'):
    idx.read_idx(path)


def test_unknown_type_code(tmp_path):
  """An unknown type code is reported as a bad magic number."""
  path = tmp_path / 'bad'
  path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]))
  with pytest.raises(idx.IdxFormatError, match='bad IDX magic'):
    idx.read_idx(path)


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_truncated_data(tmp_path, suffix):
  """Missing data bytes are reported as a truncated file."""
  path = tmp_path / f'a{suffix}'
  idx.write_idx(path, np.ones((4, 3, 3), np.uint8))
  raw = idx._read_bytes(path)  # pylint: disable=protected-access
  short = raw[:-5]
  path.write_bytes(gzip.compress(short) if suffix else short)
  with pytest.raises(idx.IdxFormatError, match='truncated'):
    idx.read_idx(path)


def test_truncated_header(tmp_path):
  """A header cut short (too few size fields, or <4 bytes) is an error."""
  path = tmp_path / 'a'
  path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 4]))
  with pytest.raises(idx.IdxFormatError, match='truncated header'):
    idx.read_idx(path)
  path.write_bytes(b'\x00\x00')
  with pytest.raises(idx.IdxFormatError, match='too short'):
    idx.read_idx(path)


def test_truncated_gzip_stream(tmp_path):
  """A gzip stream cut in the middle is an IdxFormatError, not an EOFError."""
  path = tmp_path / 'a.gz'
  idx.write_idx(path, np.random.default_rng(0).integers(
      0, 256, (50, 28, 28), dtype=np.uint8))
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  with pytest.raises(idx.IdxFormatError, match='corrupt or truncated'):
    idx.read_idx(path)


def test_write_rejects_unsupported_dtype(tmp_path):
  """Arrays without an IDX type code (e.g. uint16) are refused."""
  with pytest.raises(ValueError, match='no IDX type code'):
    idx.write_idx(tmp_path / 'a', np.zeros(3, np.uint16))
