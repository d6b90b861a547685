"""Crafted bitstreams (issue #16): ``tools/compress.py decode`` on any file either decodes it or exits
with one message naming the file, having written nothing, and CompressAI's decoder never crashes.

Hypothesis properties, on a real container of the untrained factorized compressor of
``test_compress_cli`` (16-d codes) and on a hyperprior head:

- damage with a stale CRC (truncations, 1-3 bit flips, inserted bytes, lying fields): always the error;
- lying fields and crafted records with a recomputed CRC: ``(count, 16)`` finite codes, or the error;
- the zero padding given to CompressAI's decoder holds everything it reads: bytes after it change
  nothing.

The ``[soak]`` variants run many more examples: ``pytest -m soak tests/test_bitstream_fuzz.py``.
"""

import dataclasses
import json
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import vissl_issl.plugin  # noqa: F401  (compat shims, head registration)
from vissl_issl.plugin.heads.entropy_bottleneck import EntropyBottleneckHead

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compress_cli import CODE_DIM, fake_checkpoint

from conftest import REPO, model_config, run_tool
from vissl_issl.compression import tool as compress
from vissl_issl.compression.bitstream import MAGIC, PREFIX, VERSION, encode_varint, read_container, write_records
from vissl_issl.compression.bottleneck import decode_records
from vissl_issl.maths import rate
from vissl_issl.maths.rate import MalformedRecord

EXAMPLES = [100, pytest.param(5000, marks=pytest.mark.soak, id="soak")]
IMAGES = 8
HYPERPRIOR_DIM = 24
# Words that steer CompressAI's decoder into escape codes (nibbles of 15) and zero states.
SPECIAL_WORDS = [0, 0xFFFFFFFF, 0xF0F0F0F0, 0x0F0F0F0F, 0x80000000, 0xFFFF0000]


def longest_string(symbols: int) -> int:
    """The most bytes of a rANS string of ``symbols`` symbols (see ``rate._rans_string_error``)."""
    return 4 * (2 * symbols + 4)


def fuzz(examples: int):
    # The examples of a property share the module's files and model, built once.
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass
class Tool:
    argv: List[str]  # "decode --checkpoint CKPT"
    model: torch.nn.Module
    data: bytes  # the real container
    header: Dict[str, Any]  # of the real container
    records: List[bytes]  # of the real container
    crafted: Path  # where examples write the file to decode
    out: Path


@pytest.fixture(scope="module")
def tool(tmp_path_factory):
    """A real container of IMAGES digits; the tool's ``setup`` returns the model loaded once, so that
    an example costs a decode, not a model load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    directory = tmp_path_factory.mktemp("fuzz")
    checkpoint = fake_checkpoint(directory / "run", seed=0)
    args = compress.parse_args(["decode", "--checkpoint", str(checkpoint), "--codes", "x", "--out", "x"])
    state = compress.setup(args)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compress, "setup", lambda args: state)
        codes = directory / "codes.bin"
        compress.main(["encode", "--checkpoint", str(checkpoint), "--data", "digits", "--limit", str(IMAGES),
                       "--out", str(codes)])  # fmt: skip
        real = read_container(codes)
        header = {"count": IMAGES, "shape": list(real.shape), "meta": real.meta}
        argv = ["decode", "--checkpoint", str(checkpoint)]
        crafted, out = directory / "crafted.bin", directory / "decoded.npy"
        yield Tool(argv, state.model, codes.read_bytes(), header, real.records, crafted, out)
    torch.set_num_threads(threads)


def decoded_or_error(tool: Tool) -> Optional[str]:
    """Run ``decode`` on ``tool.crafted``: None if it wrote the codes, else its message. Anything else
    (another exception, an output beside an error, codes of another shape) fails the test."""
    tool.out.unlink(missing_ok=True)
    try:
        compress.main([*tool.argv, "--codes", str(tool.crafted), "--out", str(tool.out)])
    except SystemExit as exit:
        message = exit.code
        assert isinstance(message, str) and str(tool.crafted) in message and "\n" not in message, message
        assert not tool.out.exists()
        return message
    z_hat = np.load(tool.out)
    assert z_hat.shape == (read_container(tool.crafted).size.count, CODE_DIM) and z_hat.dtype == np.float32
    assert np.isfinite(z_hat).all()
    return None


# ---------------------------------------------------------------- strategies


@st.composite
def lying_body(draw, tool: Tool) -> bytes:
    """The real container without its CRC (layout of ``bitstream``), one field rewritten: the header
    length, the header (any bytes, JSON nested deeper than Python recurses), its count, shape or meta
    (any JSON), the record lengths (any values), or the record lengths cutting the same payload into
    other records ("cuts", with the count: a consistent container whose records lie)."""
    header = dict(tool.header)
    lengths = [len(record) for record in tool.records]
    field = draw(st.sampled_from(["header length", "header", "count", "shape", "meta", "lengths", "cuts"]))
    if field == "lengths":
        lengths = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=2 * IMAGES))
    elif field == "cuts":
        payload = sum(lengths)
        cut = st.integers(0, payload // 4).map(lambda words: 4 * words) | st.integers(0, payload)
        cuts = sorted(draw(st.lists(cut, max_size=IMAGES - 1)))
        lengths = np.diff([0, *cuts, payload]).tolist()
        header["count"] = len(lengths)
    elif field in ("count", "shape", "meta"):
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=8,
        )
        header[field] = draw(json_values | st.lists(st.integers(-2, 2**40), max_size=3))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if field == "header":
        text = draw(st.binary(max_size=64) | st.integers(1, 10**5).map(lambda depth: b"[" * depth))
    text_length = draw(st.integers(0, 2**32 - 1)) if field == "header length" else len(text)
    varints = b"".join(map(encode_varint, lengths))
    return PREFIX.pack(MAGIC, VERSION, text_length) + text + varints + b"".join(tool.records)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` truncated, with 1-3 bits flipped or bytes inserted; the CRC left as it was."""
    kind = draw(st.sampled_from(["truncate", "flip", "insert"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        flipped = bytearray(data)
        for bit in draw(st.sets(st.integers(0, 8 * len(data) - 1), min_size=1, max_size=3)):
            flipped[bit // 8] ^= 1 << bit % 8
        return bytes(flipped)
    position = draw(st.integers(0, len(data)))
    return data[:position] + draw(st.binary(min_size=1, max_size=16)) + data[position:]


def words(max_words: int) -> st.SearchStrategy[bytes]:
    """2 to ``max_words`` 32-bit words, random or from SPECIAL_WORDS."""
    word = st.integers(0, 2**32 - 1) | st.sampled_from(SPECIAL_WORDS)
    return st.lists(word, min_size=2, max_size=max_words).map(lambda ws: struct.pack(f"<{len(ws)}I", *ws))


@st.composite
def crafted_record(draw, real: List[bytes], longest: int) -> bytes:
    """Random bytes or words (some longer than ``longest``, the coder's longest record), or a real
    record mutated: bits flipped, bytes set, cut, grown by words, spliced with another."""
    kind = draw(st.sampled_from(["bytes", "words", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=longest + 64))
    if kind == "words":
        return draw(words(longest // 4 + 8))
    record = bytearray(draw(st.sampled_from(real)))
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["flip", "set", "cut", "grow", "splice"]))
        if operation == "flip" and record:
            record[draw(st.integers(0, len(record) - 1))] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and record:
            record[draw(st.integers(0, len(record) - 1))] = draw(st.integers(0, 255))
        elif operation == "cut":
            del record[draw(st.integers(0, len(record))) :]
        elif operation == "grow":
            record += draw(words(8))
        elif operation == "splice":
            other = draw(st.sampled_from(real))
            record = record[: draw(st.integers(0, len(record)))] + other[draw(st.integers(0, len(other))) :]
    return bytes(record)


# ---------------------------------------------------------------- damaged and lying containers


@pytest.mark.parametrize("examples", EXAMPLES)
def test_damage_with_a_stale_crc_always_gives_the_error_and_no_output(tool, examples):
    stale = tool.data[-4:]

    @fuzz(examples)
    @given(data=damaged(tool.data) | lying_body(tool).map(lambda body: body + stale))
    def check(data):
        tool.crafted.write_bytes(data)
        assert data == tool.data or decoded_or_error(tool) is not None

    check()


@pytest.mark.parametrize("examples", EXAMPLES)
def test_lies_with_a_valid_crc_decode_or_give_the_error(tool, examples):
    @fuzz(examples)
    @given(body=lying_body(tool))
    def check(body):
        tool.crafted.write_bytes(with_crc(body))
        decoded_or_error(tool)

    check()


# ---------------------------------------------------------------- crafted records, valid CRC


@pytest.mark.parametrize("examples", EXAMPLES)
def test_crafted_records_decode_or_give_the_error(tool, examples):
    @fuzz(examples)
    @given(records=st.lists(crafted_record(tool.records, longest_string(CODE_DIM)), min_size=1, max_size=IMAGES))
    def check(records):
        write_records(tool.crafted, records, (CODE_DIM,), tool.header["meta"])
        message = decoded_or_error(tool)
        assert message is None or " is malformed: " in message

    check()


@pytest.fixture(scope="module")
def hyperprior():
    """A model whose one head is a hyperprior ``entropy_bottleneck``, and real records of it."""
    torch.manual_seed(0)
    head = EntropyBottleneckHead(model_config(), [HYPERPRIOR_DIM, HYPERPRIOR_DIM], prior="hyperprior").eval()
    head.update()
    model = torch.nn.Module()
    model.heads = torch.nn.ModuleList([head])
    return model, head.compress(4 * torch.randn(IMAGES, HYPERPRIOR_DIM))


@pytest.mark.parametrize("examples", EXAMPLES)
def test_crafted_hyperprior_records_decode_or_raise_malformed_record(hyperprior, examples):
    model, real = hyperprior
    side_longest = longest_string(model.heads[0].rate.side_bottleneck.channels)
    main_longest = longest_string(HYPERPRIOR_DIM)
    side_and_main = st.tuples(words(side_longest // 4 + 2), words(main_longest // 4 + 2)).map(
        lambda strings: encode_varint(len(strings[0])) + strings[0] + strings[1]
    )
    record = crafted_record(real, side_longest + main_longest + 1) | side_and_main

    @fuzz(examples)
    @given(records=st.lists(record, min_size=1, max_size=IMAGES), batch_size=st.integers(1, IMAGES))
    def check(records, batch_size):
        try:
            z_hat, _ = decode_records(model, records, batch_size)
        except MalformedRecord as error:
            assert 0 <= error.index < len(records) and str(error).startswith(f"record {error.index} is malformed: ")
            return
        assert z_hat.shape == (len(records), HYPERPRIOR_DIM) and np.isfinite(z_hat).all()

    check()


# ---------------------------------------------------------------- the decoder stays in its input


@pytest.mark.parametrize("examples", EXAMPLES)
def test_the_decoder_reads_nothing_after_its_zero_padding(tool, hyperprior, examples):
    """CompressAI's decoder on any string of a valid length (``rate._decoder_input`` pads it) with
    the factorized coder's CDFs or the Gaussian's 64, at any indexes: 4 KiB of random bytes after
    the padding change nothing, so it read none of them."""
    coders = {
        "factorized": tool.model.heads[0].rate.bottleneck,
        "gaussian": hyperprior[0].heads[0].rate.conditional,
    }

    @fuzz(examples)
    @given(coder=st.sampled_from(sorted(coders)), data=st.data(), seed=st.integers(0, 2**32 - 1))
    def check(coder, data, seed):
        tail = np.random.default_rng(seed).bytes(4096)
        entropy_model = coders[coder]
        cdfs, lengths, offsets = rate._tables(entropy_model)
        indexes = data.draw(st.lists(st.integers(0, len(cdfs) - 1), min_size=1, max_size=CODE_DIM))
        padded = rate._decoder_input(data.draw(words(longest_string(len(indexes)) // 4)), len(indexes))
        decode = entropy_model.entropy_coder.decode_with_indexes
        assert decode(padded, indexes, cdfs, lengths, offsets) == decode(padded + tail, indexes, cdfs, lengths, offsets)

    check()


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
def test_decode_command_on_a_crafted_file_exits_with_one_message(tool, tmp_path):
    """The file that made CompressAI's decoder segfault: a valid container whose record is 1 MiB of
    0xFF bytes (an escape code whose length runs through the whole record, then read past its end)."""
    codes, out = tmp_path / "crafted.bin", tmp_path / "decoded.npy"
    write_records(codes, [b"\xff" * 2**20], (CODE_DIM,), tool.header["meta"])
    result = run_tool([REPO / "tools" / "compress.py", *tool.argv, "--codes", codes, "--out", out], tmp_path)
    message = (
        f"{codes}: record 0 is malformed: 1048576 bytes, more than the {longest_string(CODE_DIM)} that a string "
        f"of {CODE_DIM} symbols can take; nothing was written"
    )
    # Above it, stderr holds only the warnings of the imports (torch.jit.script is deprecated).
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == message, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and str(codes) not in result.stderr.replace(message, "")
    assert not out.exists()
