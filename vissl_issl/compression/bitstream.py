"""A container file of per-image entropy-coded records (one byte string per image).

Layout (version 1; integers big-endian)::

    offset     bytes  content
    0          8      magic b"ISSLBITS"
    8          2      version, uint16 (1)
    10         4      H = header length, uint32
    14         H      header: UTF-8 JSON {"count": N, "shape": [...], "meta": {...}}
    14 + H     L      the N record lengths, unsigned LEB128 varints (7 bits a byte)
    14 + H + L P      payload: the N records concatenated, in order
    end - 4    4      CRC-32 (zlib.crc32) of every byte before it, uint32

``shape`` is the code shape of one record (the latent ``z`` of one image, e.g. ``[16]``); ``meta``
is free JSON for the reader: dtype, coder and prior name, checkpoint identity, data split, ...

Overhead, i.e. the file's bytes that are not payload (:class:`ContainerSize`):

- per file: 18 bytes (magic, version, header length, CRC) + the JSON header (typically 150-400
  bytes, depending on ``meta``);
- per record: its varint length, ``max(1, ceil(bit_length(len) / 7))`` bytes: 1 byte (8 bits) for a
  record under 128 bytes, 2 bytes under 16 KiB. The authors' hub format spends a fixed 4-byte
  ``">I"`` prefix per record plus a 4-byte count (spec A.6), i.e. +32 bits per image.

So "real bits per image" has two honest values: the payload rate ``8 * P / N`` (the range coder's
output only, A.6 item 2) and the file rate ``8 * filesize / N`` (A.6 item 3), which tends to the
payload rate + 8 bits as N grows for records under 128 bytes.

Integrity. :func:`read_records` checks the magic, the version, that the file is exactly as long as
its header and lengths announce (truncation and trailing bytes are named as such) and the CRC-32,
and raises ``ValueError`` naming the file and the problem before returning anything, so a caller
never produces output from a damaged file. Any file, crafted ones with a valid CRC included, is
read or raises that ``ValueError``, no other exception (``tests/test_bitstream_fuzz.py``). The
records themselves are the coder's to check (:class:`vissl_issl.maths.rate.MalformedRecord`).

:func:`write_records` writes a temporary file in the target's directory and ``os.replace``-s it
over the target only once it is complete and synced: a failure at any point leaves the target as it
was (absent, or the previous file) and no temporary.
"""

import json
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Sequence, Tuple, Union

MAGIC = b"ISSLBITS"
VERSION = 1
PREFIX = struct.Struct(">8sHI")  # magic, version, header length
CRC = struct.Struct(">I")
FIXED_BYTES = PREFIX.size + CRC.size  # 18
MAX_VARINT_BYTES = 10  # enough for any 64-bit length
PathLike = Union[str, os.PathLike]
Records = Sequence[Union[bytes, bytearray]]


@dataclass(frozen=True)
class ContainerSize:
    """Where a container's bytes go. ``overhead_bytes == file_bytes - payload_bytes``."""

    count: int
    file_bytes: int
    payload_bytes: int
    header_bytes: int  # magic, version, header length, JSON header and CRC
    length_bytes: int  # the varint record lengths

    @property
    def overhead_bytes(self) -> int:
        return self.header_bytes + self.length_bytes

    @property
    def overhead_bits(self) -> int:
        return 8 * self.overhead_bytes

    @property
    def payload_bits_per_record(self) -> float:
        """Mean range-coder output per record (spec A.6, item 2)."""
        return 8 * self.payload_bytes / self.count if self.count else 0.0

    @property
    def file_bits_per_record(self) -> float:
        """Whole file size per record, header and lengths included (spec A.6, item 3)."""
        return 8 * self.file_bytes / self.count if self.count else 0.0


@dataclass(frozen=True)
class Container:
    records: List[bytes]
    shape: Tuple[int, ...]
    meta: Dict[str, Any]
    size: ContainerSize


# ---------------------------------------------------------------- varints


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant first, high bit set on all but the last."""
    if value < 0:
        raise ValueError(f"varints are unsigned; got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def varint_size(value: int) -> int:
    return max(1, -(-value.bit_length() // 7))


def decode_varints(data: bytes, start: int, stop: int, count: int) -> Tuple[List[int], int]:
    """``count`` varints from ``data[start:stop]``: ``(values, end offset)``; raises EOFError when
    ``stop`` comes first, ValueError for a varint longer than 10 bytes."""
    values, position = [], start
    for _ in range(count):
        value = shift = 0
        for used in range(MAX_VARINT_BYTES + 1):
            if used == MAX_VARINT_BYTES:
                raise ValueError(f"a record length at byte {position} runs over {MAX_VARINT_BYTES} bytes")
            if position >= stop:
                raise EOFError
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(value)
    return values, position


# ---------------------------------------------------------------- writing


def header_bytes(count: int, shape: Sequence[int], meta: Dict[str, Any]) -> bytes:
    header = {"count": count, "shape": [int(size) for size in shape], "meta": meta}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_records(path: Path, records: Records) -> None:
    for index, record in enumerate(records):
        if not isinstance(record, (bytes, bytearray)):
            raise TypeError(f"{path}: record {index} is a {type(record).__name__}, not bytes; nothing was written")


def write_body(file: BinaryIO, header: bytes, records: Records) -> None:
    """Everything after the prefix, with the running CRC over prefix and body written last."""
    prefix = PREFIX.pack(MAGIC, VERSION, len(header))
    crc = 0
    for chunk in (prefix, header, b"".join(encode_varint(len(record)) for record in records)):
        file.write(chunk)
        crc = zlib.crc32(chunk, crc)
    for record in records:
        file.write(record)
        crc = zlib.crc32(record, crc)
    file.write(CRC.pack(crc))


def write_records(path: PathLike, records: Records, shape: Tuple[int, ...], meta: Dict[str, Any]) -> ContainerSize:
    """Write ``records`` (one byte string per image) with their per-record code ``shape`` and JSON
    ``meta`` to ``path``, atomically; returns the file's :class:`ContainerSize`."""
    path = Path(path)
    check_records(path, records)
    try:
        header = header_bytes(len(records), shape, meta)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: meta must be JSON-serialisable ({error}); nothing was written") from error
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    # O_EXCL: never clobber another writer's temporary; mode 0o666 lets the umask apply as for open().
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write_body(file, header, records)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    lengths = sum(varint_size(len(record)) for record in records)
    payload = sum(len(record) for record in records)
    header_total = FIXED_BYTES + len(header)
    return ContainerSize(len(records), header_total + lengths + payload, payload, header_total, lengths)


# ---------------------------------------------------------------- reading


def is_size(value: Any) -> bool:
    """A non-negative JSON integer (``true`` is a Python int, not a size)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_header(raw: bytes) -> Tuple[int, Tuple[int, ...], Dict[str, Any]]:
    header = json.loads(raw.decode("utf-8"))
    count, shape, meta = header["count"], header["shape"], header["meta"]
    if not is_size(count):
        raise ValueError(f"count {count!r} is not a non-negative integer")
    if not isinstance(shape, list) or not all(is_size(size) for size in shape):
        raise ValueError(f"shape {shape!r} is not a list of non-negative integers")
    if not isinstance(meta, dict):
        raise ValueError(f"meta {meta!r} is not an object")
    return count, tuple(shape), meta


def read_container(path: PathLike) -> Container:
    """Read and verify a container (see the module doc); ValueError names the file and the problem."""
    path = Path(path)
    data = path.read_bytes()

    def damaged(problem: str) -> ValueError:
        return ValueError(f"{path}: {problem}; not a usable ISSL bitstream")

    if len(data) < FIXED_BYTES:
        raise damaged(f"truncated: {len(data)} bytes, shorter than the {FIXED_BYTES}-byte frame")
    magic, version, header_length = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise damaged(f"wrong magic {magic!r} (expected {MAGIC!r})")
    if version != VERSION:
        raise damaged(f"unsupported version {version} (this reader knows version {VERSION})")
    checksum_ok = zlib.crc32(memoryview(data)[: -CRC.size]) == CRC.unpack_from(data, len(data) - CRC.size)[0]
    corrupt = "" if checksum_ok else " (and the CRC-32 does not match: the file is corrupted)"
    lengths_start = PREFIX.size + header_length
    if lengths_start > len(data) - CRC.size:
        raise damaged(f"truncated or corrupted: its {header_length}-byte header does not fit in {len(data)} bytes")
    try:
        count, shape, meta = parse_header(data[PREFIX.size : lengths_start])
        lengths, payload_start = decode_varints(data, lengths_start, len(data) - CRC.size, count)
    except EOFError:
        raise damaged(f"truncated: the file ends inside the record lengths ({len(data)} bytes)") from None
    except KeyError as error:
        raise damaged(f"the header has no {error} field{corrupt}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, RecursionError) as error:
        raise damaged(f"unreadable header or record lengths ({error}){corrupt}") from None
    expected = payload_start + sum(lengths) + CRC.size
    if len(data) < expected:
        raise damaged(
            f"truncated: {len(data)} bytes, but its header and record lengths announce {expected} "
            "(or those are corrupted)"
        )
    if len(data) > expected:
        raise damaged(f"{len(data) - expected} trailing bytes after the announced {expected}{corrupt}")
    if not checksum_ok:
        raise damaged("CRC-32 mismatch: the file is corrupted")
    records, position = [], payload_start
    for length in lengths:
        records.append(data[position : position + length])
        position += length
    size = ContainerSize(count, len(data), sum(lengths), FIXED_BYTES + header_length, payload_start - lengths_start)
    return Container(records, shape, meta, size)


def read_records(path: PathLike) -> Tuple[List[bytes], Tuple[int, ...], Dict[str, Any]]:
    """``(records, shape, meta)`` of a container written by :func:`write_records`."""
    container = read_container(path)
    return container.records, container.shape, container.meta


def container_size_of(path: PathLike) -> ContainerSize:
    """The verified :class:`ContainerSize` of a container file."""
    return read_container(path).size
