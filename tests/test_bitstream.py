"""The entropy-coded record container: round trip, header, damage detection, atomic writes, overhead."""

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from vissl_issl.compression import bitstream
from vissl_issl.compression.bitstream import (
    FIXED_BYTES,
    MAGIC,
    container_size_of,
    decode_varints,
    encode_varint,
    read_container,
    read_records,
    varint_size,
    write_records,
)

META = {"dtype": "float32", "coder": "compressai.EntropyBottleneck", "prior": "factorized", "checkpoint": "ck:1"}


def sample_records(count: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    # 0 bytes, short and long (2-byte varint) records
    sizes = [0, 1, 127, 128, 300, *rng.integers(0, 200, size=count - 5).tolist()]
    return [rng.integers(0, 256, size=size, dtype=np.uint8).tobytes() for size in sizes]


def written(tmp_path: Path, records=None, name: str = "codes.bin") -> Path:
    path = tmp_path / name
    write_records(path, sample_records() if records is None else records, (16,), META)
    return path


def listing(directory: Path):
    return sorted(path.name for path in directory.iterdir())


def test_round_trip_is_exact(tmp_path):
    records = sample_records()
    path = tmp_path / "codes.bin"
    write_records(path, records, (16, 1, 1), META)
    read, shape, meta = read_records(path)
    assert read == records and all(isinstance(record, bytes) for record in read)
    assert shape == (16, 1, 1) and meta == META
    assert listing(tmp_path) == ["codes.bin"]  # no temporary left behind


def test_empty_container_round_trips(tmp_path):
    path = tmp_path / "empty.bin"
    size = write_records(path, [], (8,), {})
    assert read_records(path) == ([], (8,), {})
    assert size.file_bytes == path.stat().st_size and size.payload_bytes == 0
    assert size.file_bits_per_record == 0.0


def test_header_fields_are_at_the_documented_offsets(tmp_path):
    path = written(tmp_path)
    data = path.read_bytes()
    magic, version, header_length = struct.unpack_from(">8sHI", data)
    assert (magic, version) == (MAGIC, 1)
    header = json.loads(data[14 : 14 + header_length])
    assert header == {"count": 50, "shape": [16], "meta": META}
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])
    lengths, payload_start = decode_varints(data, 14 + header_length, len(data) - 4, 50)
    assert lengths == [len(record) for record in sample_records()]
    assert data[payload_start:-4] == b"".join(sample_records())


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**32, 2**63])
def test_varints_round_trip_with_the_documented_size(value):
    encoded = encode_varint(value)
    assert len(encoded) == varint_size(value) == max(1, -(-value.bit_length() // 7))
    assert decode_varints(encoded, 0, len(encoded), 1) == ([value], len(encoded))


def test_overhead_is_file_size_minus_payload(tmp_path):
    records = sample_records()
    path = tmp_path / "codes.bin"
    size = write_records(path, records, (16,), META)
    payload = sum(map(len, records))
    file_bytes = path.stat().st_size
    assert (size.file_bytes, size.payload_bytes, size.count) == (file_bytes, payload, len(records))
    assert size.overhead_bytes == file_bytes - payload and size.overhead_bits == 8 * (file_bytes - payload)
    assert size.length_bytes == sum(varint_size(len(record)) for record in records)
    header_json = len(bitstream.header_bytes(len(records), (16,), META))
    assert size.header_bytes == FIXED_BYTES + header_json
    assert size.payload_bits_per_record == pytest.approx(8 * payload / len(records))
    assert size.file_bits_per_record == pytest.approx(8 * file_bytes / len(records))
    # The reader accounts for the same bytes.
    assert read_container(path).size == size == container_size_of(path)


def test_records_under_128_bytes_cost_one_length_byte(tmp_path):
    size = write_records(tmp_path / "c.bin", [b"x" * 127] * 10, (4,), {})
    assert size.length_bytes == 10


# ---------------------------------------------------------------- damaged files


def assert_rejected(path: Path, message: str) -> None:
    before = listing(path.parent)
    with pytest.raises(ValueError, match=message) as caught:
        read_records(path)
    assert str(path) in str(caught.value)
    assert listing(path.parent) == before  # nothing was produced


@pytest.mark.parametrize("keep", [0, 10, 20, 200, -5, -1], ids=lambda keep: f"keep{keep}")
def test_truncated_file_is_rejected(tmp_path, keep):
    path = written(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    assert_rejected(path, "truncated")


def test_trailing_bytes_are_rejected(tmp_path):
    path = written(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    assert_rejected(path, "trailing bytes")


@pytest.mark.parametrize("where", ["header", "payload", "crc", "last payload byte"])
def test_flipped_byte_is_rejected(tmp_path, where):
    path = written(tmp_path)
    data = bytearray(path.read_bytes())
    header_length = struct.unpack_from(">I", data, 10)[0]
    offset = {"header": 14 + header_length // 2, "payload": len(data) - 100, "crc": len(data) - 2}.get(
        where, len(data) - 5
    )
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    assert_rejected(path, "corrupted")


def test_wrong_magic_is_rejected(tmp_path):
    path = written(tmp_path)
    path.write_bytes(b"NOTISSL!" + path.read_bytes()[8:])
    assert_rejected(path, "wrong magic")


def test_unknown_version_is_rejected(tmp_path):
    path = written(tmp_path)
    data = bytearray(path.read_bytes())
    data[8:10] = struct.pack(">H", 2)
    data[-4:] = struct.pack(">I", zlib.crc32(bytes(data[:-4])))  # a consistent file, just newer
    path.write_bytes(bytes(data))
    assert_rejected(path, "unsupported version 2")


def consistent(path: Path, header: bytes) -> None:
    """Rewrite ``path`` with ``header`` as its JSON header, no records and a valid CRC."""
    body = struct.pack(">8sHI", MAGIC, 1, len(header)) + header
    path.write_bytes(body + struct.pack(">I", zlib.crc32(body)))


def test_a_header_nested_deeper_than_python_recurses_is_rejected(tmp_path):
    path = tmp_path / "codes.bin"
    consistent(path, b"[" * 100_000)
    assert_rejected(path, "unreadable header")


@pytest.mark.parametrize("field", ["count", "shape"])
def test_booleans_are_not_sizes(tmp_path, field):
    header = {"count": 0, "shape": [16], "meta": {}}
    header[field] = True if field == "count" else [True]
    path = tmp_path / "codes.bin"
    consistent(path, json.dumps(header).encode())
    assert_rejected(path, f"{field} .*True.* is not")


# ---------------------------------------------------------------- atomic writes


def test_a_record_that_is_not_bytes_writes_nothing(tmp_path):
    path = tmp_path / "codes.bin"
    with pytest.raises(TypeError, match=r"codes\.bin: record 2 is a str"):
        write_records(path, [b"a", b"b", "c", b"d"], (4,), {})
    assert listing(tmp_path) == []


def test_meta_that_is_not_json_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        write_records(tmp_path / "codes.bin", [b"a"], (4,), {"array": np.zeros(2)})
    assert listing(tmp_path) == []


def test_a_failure_midway_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = written(tmp_path)
    previous = path.read_bytes()
    calls = []
    real_crc32 = zlib.crc32

    def failing_crc32(data, value=0):
        calls.append(len(data))
        if len(calls) == 10:  # prefix, header, lengths, then 6 records are already on disk
            raise OSError("disk full")
        return real_crc32(data, value)

    monkeypatch.setattr(bitstream.zlib, "crc32", failing_crc32)
    with pytest.raises(OSError, match="disk full"):
        write_records(path, sample_records(seed=1), (16,), META)
    monkeypatch.undo()
    assert len(calls) == 10
    assert listing(tmp_path) == ["codes.bin"] and path.read_bytes() == previous
    assert read_records(path)[0] == sample_records()


def test_a_failing_replace_leaves_no_file(tmp_path, monkeypatch):
    def failing_replace(source, target):
        raise OSError("replace failed")

    monkeypatch.setattr(bitstream.os, "replace", failing_replace)
    with pytest.raises(OSError, match="replace failed"):
        write_records(tmp_path / "codes.bin", sample_records(), (16,), META)
    assert listing(tmp_path) == []


def test_written_file_has_ordinary_permissions(tmp_path):
    path = written(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
