"""Classical image codecs through Pillow, as rate baselines: JPEG, PNG and WebP.

:func:`encode_images` encodes every image on its own, decodes it back and counts
``bits = 8 * len(encoded bytes)``: the whole stream exactly as Pillow writes it (JPEG: SOI, JFIF
APP0, quantisation and Huffman tables, frame and scan headers, EOI; PNG: signature and chunks; WebP:
RIFF header), with no container of ours around it. The images are the ones *fed to the pipeline*,
i.e. after the dataset's resizing (spec A.6: the authors' ``PillowCodec`` does the same).

Choices, all in the baselines' favour:

- JPEG ``optimize=True`` (per-image Huffman tables: 693 -> 360 bytes for a 16 px digit at quality
  70); Pillow writes no EXIF/ICC unless asked, so that is as minimal as Pillow's headers get. At
  16 px the headers dominate: :func:`jpeg_header_bytes` counts the bytes before the entropy-coded
  scan, ~150 of the ~240 bytes of a grey digit.
- PNG is lossless; ``quality`` is ignored and the stream is written with ``compress_level=9,
  optimize=True``.
- WebP: lossy with ``quality`` (``method=6``, the slowest and smallest), or lossless with
  ``lossless=True`` (then ``quality`` is the encoder effort, Pillow's convention).
- ``grey=True`` (the default) encodes an RGB image whose three channels are equal (the digits are
  grey replicated into RGB) as a one-channel ``L`` image and replicates the decoded channel: the
  same pixels, 35-45% fewer JPEG/PNG bytes. ``grey=False`` encodes RGB as given.
"""

import io
from typing import List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, features

CODECS = ("jpeg", "png", "webp")
PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
PNG_COMPRESS_LEVEL = 9
WEBP_METHOD = 6
Images = Union[np.ndarray, Sequence[Image.Image]]


def webp_supported() -> bool:
    return bool(features.check("webp"))


def save_options(codec: str, quality: int, lossless: bool) -> dict:
    if codec == "jpeg":
        if lossless:
            raise ValueError("JPEG has no lossless mode here; use png or webp with lossless=True")
        return {"quality": quality, "optimize": True}
    if codec == "png":
        return {"compress_level": PNG_COMPRESS_LEVEL, "optimize": True}
    if codec == "webp":
        if not webp_supported():
            raise ValueError("this Pillow build has no WebP support")
        return {"quality": quality, "method": WEBP_METHOD, "lossless": lossless}
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


def as_pil(image: Union[np.ndarray, Image.Image]) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8; got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3):
        return Image.fromarray(image)
    raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3); got {image.shape}")


def is_grey_rgb(image: Image.Image) -> bool:
    if image.mode != "RGB":
        return False
    pixels = np.asarray(image)
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def encode_one(image: Image.Image, codec: str, options: dict, grey: bool) -> Tuple[np.ndarray, bytes]:
    """``(decoded uint8 array in the input's mode, encoded bytes)`` of one image."""
    collapse = grey and is_grey_rgb(image)
    source = image.convert("L") if collapse else image
    buffer = io.BytesIO()
    source.save(buffer, PILLOW_FORMATS[codec], **options)
    encoded = buffer.getvalue()
    with Image.open(io.BytesIO(encoded)) as decoded:
        decoded = decoded.convert(image.mode if image.mode in ("L", "RGB") else "RGB")
        pixels = np.asarray(decoded)
    return pixels, encoded


def encode_streams(
    images: Images, codec: str, quality: int = 75, lossless: bool = False, grey: bool = True
) -> Tuple[np.ndarray, List[bytes]]:
    """Like :func:`encode_images`, with the encoded byte strings instead of their bit counts."""
    options = save_options(codec, quality, lossless)
    decoded, streams = [], []
    for image in images:
        pixels, encoded = encode_one(as_pil(image), codec, options, grey)
        decoded.append(pixels)
        streams.append(encoded)
    if not decoded:
        raise ValueError("no images to encode")
    return np.stack(decoded), streams


def encode_images(
    images: Images, codec: str, quality: int = 75, lossless: bool = False, grey: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """Encode and decode each image with ``codec`` (``jpeg``, ``png``, ``webp``) at ``quality``:
    ``(decoded uint8 (N, H, W, C) -- or (N, H, W) for grey input --, bits per image int64 (N,))``."""
    decoded, streams = encode_streams(images, codec, quality, lossless, grey)
    return decoded, np.array([8 * len(stream) for stream in streams], dtype=np.int64)


def jpeg_header_bytes(stream: bytes) -> int:
    """Bytes of a baseline JPEG before its entropy-coded data (SOI, all marker segments up to and
    including the first SOS header), plus the 2-byte EOI at its end: the per-image cost that does
    not depend on the content."""
    if stream[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI marker)")
    position = 2
    while position + 4 <= len(stream):
        if stream[position] != 0xFF:
            raise ValueError(f"malformed JPEG: expected a marker at byte {position}")
        marker = stream[position + 1]
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        position += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return position + 2
    raise ValueError("malformed JPEG: no start-of-scan marker")
