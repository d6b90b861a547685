"""Entropy models of a code ``z`` of shape ``(N, D)``, on CompressAI (the lossyless ``H_factorized``
and ``H_hyper`` rates, Dubois et al. 2021): each of the D dimensions is a channel of CompressAI's
``(N, C, ...)`` layout, as if z were a 1x1 image.

Both models quantise ``z`` to ``z_hat`` and return its estimated code length in bits, per row::

    training:    z_hat = z + u,  u ~ U(-1/2, 1/2)           (CompressAI's "noise")
    evaluation:  z_hat = round(z - m) + m                   (CompressAI's "dequantize")
    bits = -sum log2 q(z_hat)   (+ the side information, for the hyperprior)

with ``m`` the learned medians (factorized) or the predicted means (hyperprior). Everything runs in
fp32 with autocast off ("precision here is important", lossyless ``rates.py``).

Real coding: :meth:`Rate.update` builds the range coder's CDF tables from the current parameters
(again after any later change of the parameters, or real and estimated rates diverge);
:meth:`Rate.compress` then writes one self-contained record per row, and :meth:`Rate.decompress`
returns exactly the evaluation-mode ``z_hat``. A record costs its estimated bits plus 32 to 64 bits
per rANS string (the coder flushes its 64-bit state and writes whole 32-bit words). Records carry
no checksum: a corrupted or crafted record either decodes to other codes or raises
:class:`MalformedRecord` (a length no string of this coder has, or a decoded symbol beyond the
encoder's range), and decoding never reads or writes outside the record.

Three CompressAI 1.2.8 pitfalls handled here:

- its rANS encoder writes into a buffer of one 32-bit word per symbol, with no bounds check, so a
  row whose code needs more words than it has dimensions overflows the heap (always for D = 1: the
  flush alone is two words; for larger D with outliers, whose escape codes cost up to ~50 bits).
  :func:`_encode` appends near-free padding symbols that enlarge the buffer; rANS is last-in
  first-out, so they are encoded first and the decoder never reaches them;
- its rANS decoder reads its input with no bounds check either, as far as the bytes it has read so
  far lead it (escape codes announce their own length), so a crafted string of a valid length made
  it read past its end and segfault. :func:`_decoder_input` appends zeros up to the most it can read;
- ``EntropyBottleneck.update`` can re-solve the quantiles by bisection (``update_quantiles=True``);
  we keep the ones the auxiliary loss trained, so :meth:`Rate.update` changes no parameter and the
  evaluation forward is the same before and after it.
"""

import importlib
import math
from typing import TYPE_CHECKING, List, Sequence, Tuple

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from compressai.entropy_models import EntropyModel


def entropy_models():
    """``compressai.entropy_models``, imported on first use: importing compressai pulls in its
    datasets and torch_geometric (seconds), which every process importing the plugin would pay."""
    return importlib.import_module("compressai.entropy_models")


# rANS precision in CompressAI (a compile-time constant of its C++ coder).
_PRECISION = 16
# One symbol of probability 1 - 2^-16: about 2e-5 bits each.
_PADDING_CDF = [0, (1 << _PRECISION) - 1, 1 << _PRECISION]
# Escape codes store |symbol - offset| in int32 nibbles; far below that, fp32 codes are still integers.
_MAX_SYMBOL = 1 << 24
# lossyless rates.py: 64 Gaussian scales for the coder, log-spaced from the scale bound up.
_SCALE_TABLE = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64)).tolist()


def _bits(likelihood: Tensor) -> Tensor:
    """``(N, C)`` likelihoods -> ``(N,)`` code lengths ``-sum_c log2 q``."""
    return -torch.log2(likelihood).sum(dim=1)


class MalformedRecord(ValueError):
    """A record that this coder cannot have written; ``index``: its place in the list being decoded."""

    def __init__(self, index: int, problem: str):
        super().__init__(f"record {index} is malformed: {problem}")
        self.index, self.problem = index, problem


def _rans_string_error(string: bytes, symbols: int) -> str:
    """Why ``string`` cannot be the rANS string of ``symbols`` symbols that :func:`_encode` writes ('' if
    it can): the coder writes its 64-bit state, then whole 32-bit words, into a buffer of one word per
    symbol coded, the ``symbols + 4`` padding symbols included."""
    most = 4 * (2 * symbols + 4)
    if len(string) < 8 or len(string) % 4:
        return f"a rANS string is a whole number (>= 2) of 32-bit words, got {len(string)} bytes"
    if len(string) > most:
        return f"{len(string)} bytes, more than the {most} that a string of {symbols} symbols can take"
    return ""


def _decoder_input(string: bytes, symbols: int) -> bytes:
    """``string`` followed by zeros, as many 32-bit words in all as CompressAI 1.2.8's decoder can read
    when it decodes ``symbols`` symbols from it, whatever its bytes: decoding never reads past it.

    The bound, from ``rans_interface.cpp`` (``decode_with_indexes``) and ``rans64.h``: the decoder
    reads 2 words for its state, then per symbol at most 1 word to renormalise and, for an escape
    symbol, at most 1 word per 4-bit read: ``c`` reads of the escape's length, while they give 15,
    then ``n <= 15 c`` reads of its value. Each 4-bit read shifts the 64-bit state, which needs a new
    word after at most 9 reads, then after at most 8; a zero word makes the next read 0, which ends
    the length. So ``c <= 10 + 8 w``, with ``w`` the string's words read meanwhile (``W`` at most in
    all), and a ``W``-word string is read up to word ``2 + S + 16 sum(c) <= 2 + 161 S + 128 W``.
    """
    words = 2 + 161 * symbols + 128 * (len(string) // 4)
    return string.ljust(4 * words, b"\0")


def _tables(model: "EntropyModel") -> Tuple[List[List[int]], List[int], List[int]]:
    """The coder's CDF tables as the lists it takes, each CDF cut to its length: the coder converts
    them on every call, and the Gaussian table pads all 64 CDFs to the widest (~3000 entries)."""
    lengths = model.cdf_length.tolist()
    cdfs = [cdf[:length] for cdf, length in zip(model.quantized_cdf.tolist(), lengths)]
    return cdfs, lengths, model.offset.tolist()


def _encode(model: "EntropyModel", values: Tensor, means: Tensor, indexes: Tensor) -> List[bytes]:
    """``round(values - means)`` coded row by row with the CDFs ``indexes`` picks: ``(N, C)`` each."""
    deltas = torch.round(values - means)
    if not (deltas.abs() <= _MAX_SYMBOL).all():  # also catches NaN
        raise ValueError(f"codes must be finite and within {_MAX_SYMBOL} quantisation steps of their mean")
    cdfs, lengths, offsets = _tables(model)
    cdfs, lengths, offsets = cdfs + [_PADDING_CDF], lengths + [len(_PADDING_CDF)], offsets + [0]
    # An escaped symbol costs at most 16 + 4 * 8 bits, so 2C + 4 words hold any row and the flush.
    padding_symbols, padding_indexes = [0] * (values.shape[1] + 4), [len(cdfs) - 1] * (values.shape[1] + 4)
    return [
        model.entropy_coder.encode_with_indexes(
            row + padding_symbols, row_indexes + padding_indexes, cdfs, lengths, offsets
        )
        for row, row_indexes in zip(deltas.int().tolist(), indexes.int().tolist())
    ]


def _decode(model: "EntropyModel", strings: Sequence[bytes], means: Tensor, indexes: Tensor) -> Tensor:
    """Inverse of :func:`_encode`: ``symbols + means``, ``(N, C)`` on ``means``' device and dtype.
    Raises :class:`MalformedRecord` for a string that decodes to a symbol the encoder refuses."""
    cdfs, lengths, offsets = _tables(model)
    symbols = [
        model.entropy_coder.decode_with_indexes(_decoder_input(string, len(row)), row, cdfs, lengths, offsets)
        for string, row in zip(strings, indexes.int().tolist())
    ]
    symbols = torch.tensor(symbols, dtype=torch.int64).reshape(means.shape)
    outside = (symbols.abs() > _MAX_SYMBOL).any(dim=1).nonzero()
    if len(outside):
        raise MalformedRecord(int(outside[0]), f"it decodes to symbols beyond the encoder's +-{_MAX_SYMBOL}")
    return symbols.to(means.device, means.dtype) + means


class Rate(nn.Module):
    """Base class: fp32, autocast-free wrappers around the models' ``_forward``, ``_compress`` and
    ``_decompress``; the coder tables of a checkpoint are loaded whatever their size."""

    def forward(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        """``(N, D)`` codes -> ``z_hat`` ``(N, D)`` and ``bits`` ``(N,)``, both fp32."""
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float())

    def aux_loss(self) -> Tensor:
        """CompressAI's quantile loss: fits the ``quantiles`` (tails and medians) to the learned
        densities, which it reads detached, so only ``quantiles`` get gradients."""
        raise NotImplementedError

    def update(self) -> None:
        """Builds the coder's CDF tables from the current parameters (forced)."""
        raise NotImplementedError

    @torch.no_grad()
    def compress(self, z: Tensor) -> List[bytes]:
        """``(N, D)`` codes -> N records, each decodable on its own. Needs :meth:`update`."""
        self._check_updated()
        with torch.autocast(z.device.type, enabled=False):
            return self._compress(z.float())

    @torch.no_grad()
    def decompress(self, records: Sequence[bytes]) -> Tensor:
        """N records -> ``(N, D)`` fp32, equal to the evaluation-mode ``z_hat`` of the coded rows.

        Raises :class:`MalformedRecord` on a record that this coder cannot have written (see
        :func:`_rans_string_error` and :func:`_decode`), before decoding it.
        """
        self._check_updated()
        records = list(records)
        for i, record in enumerate(records):
            if not isinstance(record, bytes):
                raise ValueError(f"record {i} is a {type(record).__name__}, not bytes")
        device = next(self.parameters()).device
        with torch.autocast(device.type, enabled=False):
            return self._decompress(records)

    def _check_updated(self) -> None:
        if any(m.quantized_cdf.numel() == 0 for m in self.modules() if isinstance(m, entropy_models().EntropyModel)):
            raise ValueError("the entropy coder has no CDF tables: call update() after training, before coding")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # update() sizes the tables to the learned densities, so a checkpoint's need not match this
        # module's (empty before update()): take the checkpoint's sizes, as CompressAI's models do.
        for name, module in self.named_modules():
            if isinstance(module, entropy_models().EntropyModel):
                for buffer in ("_offset", "_quantized_cdf", "_cdf_length"):
                    key = f"{prefix}{name}.{buffer}"
                    if key in state_dict:
                        getattr(module, buffer).resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _forward(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _compress(self, z: Tensor) -> List[bytes]:
        raise NotImplementedError

    def _decompress(self, records: List[bytes]) -> Tensor:
        raise NotImplementedError


class FactorizedRate(Rate):
    """Ballé et al.'s factorized prior (lossyless ``H_factorized``): one learned univariate density
    per dimension, CompressAI's ``EntropyBottleneck(dim, init_scale=10, filters=(3, 3, 3, 3))``::

        q_d(y) = c_d(y + 1/2) - c_d(y - 1/2)       c_d: a learned monotone CDF
        bits = -sum_d log2 q_d(z_hat_d)            (N, D) -> (N,)

    A record is the row's rANS string.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bottleneck = entropy_models().EntropyBottleneck(dim, init_scale=10, filters=(3, 3, 3, 3))

    def aux_loss(self) -> Tensor:
        return self.bottleneck.loss()

    def update(self) -> None:
        self.bottleneck.update(force=True)

    def _medians(self) -> Tensor:
        return self.bottleneck.quantiles[:, 0, 1].detach()

    def _indexes(self, n: int) -> Tensor:
        return torch.arange(self.bottleneck.channels).expand(n, -1)

    def _forward(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        z_hat, likelihood = self.bottleneck(z)
        return z_hat, _bits(likelihood)

    def _compress(self, z: Tensor) -> List[bytes]:
        return _encode(self.bottleneck, z, self._medians(), self._indexes(len(z)))

    def _decompress(self, records: List[bytes]) -> Tensor:
        for i, record in enumerate(records):
            error = _rans_string_error(record, self.bottleneck.channels)
            if error:
                raise MalformedRecord(i, error)
        medians = self._medians().expand(len(records), -1)
        return _decode(self.bottleneck, records, medians, self._indexes(len(records)))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """lossyless ``MLP(n_hid_layers=2)``: Linear-ReLU twice, then Linear; no normalisation."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
    )


def _write_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _split_record(record: bytes, side_symbols: int, symbols: int) -> Tuple[bytes, bytes]:
    """``varint(len(side)) | side | main`` -> ``(side, main)``, the rANS strings of ``side_symbols``
    and ``symbols`` symbols; ValueError if the framing is wrong."""
    side_length, start = 0, None
    for i, byte in enumerate(record):
        side_length |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            start = i + 1
            break
    if start is None:
        raise ValueError("truncated length prefix")
    side, main = record[start : start + side_length], record[start + side_length :]
    if len(side) < side_length:
        raise ValueError(f"the length prefix says {side_length} side bytes, the record has {len(side)}")
    error = _rans_string_error(side, side_symbols) or _rans_string_error(main, symbols)
    if error:
        raise ValueError(error)
    return side, main


class HyperpriorRate(Rate):
    """Mean-scale hyperprior (Minnen et al. 2018; lossyless ``H_hyper`` with ``is_pred_mean``): a
    side code ``s`` carries each row's Gaussian parameters::

        s = h_a(z)                   (N, S),  S = max(10, D // 5); MLP D -> H -> H -> S
        s_hat = Q(s)                 factorized prior on s (an EntropyBottleneck)
        sigma, mu = h_s(s_hat)       (N, D) each; MLP S -> H -> H -> 2D, H = max(D, 256)
        q(y | s_hat) = Phi((y - mu + 1/2) / sigma) - Phi((y - mu - 1/2) / sigma),  sigma >= 0.11
        bits = -sum log2 q(s_hat) - sum_d log2 q(z_hat_d | s_hat)

    and ``z_hat = round(z - mu) + mu`` in evaluation. For coding, sigma picks the nearest larger of
    64 log-spaced scales in [0.11, 256]. A record is ``varint(len(side)) | side | main``.

    The authors' coder used the *scales* as the means (``means_hat = atleast_ndim(scales_hat, 4)``
    in ``HRateHyperprior.get_indexes_means_hat``), which inflated real rates but not estimated
    ones; fixed here: coding uses the predicted means, as the forward does.

    Encoder and decoder must derive bit-identical ``sigma`` (it picks the CDF) and ``mu`` from
    ``s_hat``, but a float32 matmul can differ by an ulp between batch sizes, and the decoder may
    see other batches than the encoder. ``h_s`` therefore runs in float64, rounded to float32: the
    results then differ only if a float64 error straddles a float32 rounding point (odds ~1e-9 per value).
    """

    def __init__(self, dim: int):
        super().__init__()
        side_dim, hidden = max(10, dim // 5), max(dim, 256)
        self.dim = dim
        self.side_encoder = _mlp(dim, hidden, side_dim)
        self.z_decoder = _mlp(side_dim, hidden, 2 * dim)
        self.side_bottleneck = entropy_models().EntropyBottleneck(side_dim, init_scale=10, filters=(3, 3, 3, 3))
        self.conditional = entropy_models().GaussianConditional(_SCALE_TABLE)

    def aux_loss(self) -> Tensor:
        return self.side_bottleneck.loss()

    def update(self) -> None:
        self.side_bottleneck.update(force=True)
        self.conditional.update()

    def _gaussian(self, side_hat: Tensor) -> Tuple[Tensor, Tensor]:
        """``s_hat`` ``(N, S)`` -> ``sigma, mu`` ``(N, D)`` each, fp32 (computed in float64)."""
        params = {name: p.double() for name, p in self.z_decoder.named_parameters()}
        scales, means = torch.func.functional_call(self.z_decoder, params, (side_hat.double(),)).float().chunk(2, 1)
        return scales, means

    def _side_medians(self, n: int) -> Tensor:
        return self.side_bottleneck.quantiles[:, 0, 1].detach().expand(n, -1)

    def _side_indexes(self, n: int) -> Tensor:
        return torch.arange(self.side_bottleneck.channels).expand(n, -1)

    def _forward(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        side_hat, side_likelihood = self.side_bottleneck(self.side_encoder(z))
        scales, means = self._gaussian(side_hat)
        z_hat, likelihood = self.conditional(z, scales, means)
        return z_hat, _bits(side_likelihood) + _bits(likelihood)

    def _compress(self, z: Tensor) -> List[bytes]:
        n = len(z)
        side_strings = _encode(self.side_bottleneck, self.side_encoder(z), self._side_medians(n), self._side_indexes(n))
        # The decoder's s_hat, so that both ends derive the Gaussians from the same input.
        side_hat = _decode(self.side_bottleneck, side_strings, self._side_medians(n), self._side_indexes(n))
        scales, means = self._gaussian(side_hat)
        z_strings = _encode(self.conditional, z, means, self.conditional.build_indexes(scales))
        return [_write_varint(len(side)) + side + main for side, main in zip(side_strings, z_strings)]

    def _decompress(self, records: List[bytes]) -> Tensor:
        side_strings, z_strings = [], []
        for i, record in enumerate(records):
            try:
                side, main = _split_record(record, self.side_bottleneck.channels, self.dim)
            except ValueError as e:
                raise MalformedRecord(i, str(e)) from None
            side_strings.append(side)
            z_strings.append(main)
        n = len(records)
        side_hat = _decode(self.side_bottleneck, side_strings, self._side_medians(n), self._side_indexes(n))
        scales, means = self._gaussian(side_hat)
        return _decode(self.conditional, z_strings, means, self.conditional.build_indexes(scales))
