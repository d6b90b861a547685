"""Classical baselines through Pillow (JPEG / PNG / WebP) and the matched-accuracy search."""

import io

import numpy as np
import pytest
from PIL import Image

from vissl_issl.compression.classical import (
    encode_images,
    encode_streams,
    jpeg_header_bytes,
    webp_supported,
)
from vissl_issl.compression.matched_accuracy import RatePoint, at_edge, by_rate, cheapest_reaching, describe_match

needs_webp = pytest.mark.skipif(not webp_supported(), reason="this Pillow build has no WebP codec")


def smooth_rgb(count: int = 6, size: int = 16, seed: int = 0) -> np.ndarray:
    """Blurry colour images (a gradient plus a few blobs): what lossy codecs are made for."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        channels = []
        for _ in range(3):
            cx, cy, a, b = rng.uniform(0, 1, 4)
            blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)
            channels.append(255 * (0.5 * a * x + 0.3 * b * y + 0.5 * blob).clip(0, 1))
        images.append(np.stack(channels, -1))
    return np.rint(np.stack(images)).astype(np.uint8)


def noisy_rgb(count: int = 4, size: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def grey_as_rgb(count: int = 4) -> np.ndarray:
    return np.repeat(smooth_rgb(count)[..., :1], 3, axis=-1)


@pytest.mark.parametrize("images", [smooth_rgb(), noisy_rgb(), grey_as_rgb()], ids=["smooth", "noise", "grey"])
def test_png_is_lossless_and_ignores_quality(images):
    decoded, bits = encode_images(images, "png", quality=1)
    assert decoded.dtype == np.uint8 and decoded.shape == images.shape
    np.testing.assert_array_equal(decoded, images)
    _, bits_other_quality = encode_images(images, "png", quality=99)
    np.testing.assert_array_equal(bits, bits_other_quality)


def test_pil_images_and_grey_arrays_are_accepted():
    images = smooth_rgb(3)
    decoded, _ = encode_images([Image.fromarray(image) for image in images], "png")
    np.testing.assert_array_equal(decoded, images)
    grey = images[..., 0]
    decoded, _ = encode_images(grey, "png")
    assert decoded.shape == grey.shape
    np.testing.assert_array_equal(decoded, grey)


@pytest.mark.parametrize("codec", ["jpeg", "png"] + (["webp"] if webp_supported() else []))
def test_bits_are_eight_times_the_byte_length_of_what_pillow_writes(codec):
    images = smooth_rgb(4)
    decoded, streams = encode_streams(images, codec, quality=50)
    _, bits = encode_images(images, codec, quality=50)
    assert bits.dtype == np.int64 and bits.shape == (4,)
    np.testing.assert_array_equal(bits, [8 * len(stream) for stream in streams])
    # each stream is a complete file that Pillow decodes on its own into the returned pixels
    for stream, pixels in zip(streams, decoded):
        with Image.open(io.BytesIO(stream)) as image:
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), pixels)


def test_jpeg_bits_increase_with_quality_and_decoded_images_are_close():
    images = smooth_rgb(8)
    means, errors = [], []
    for quality in (5, 25, 50, 75, 95):
        decoded, bits = encode_images(images, "jpeg", quality)
        means.append(bits.mean())
        errors.append(np.abs(decoded.astype(int) - images).mean())
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert errors[-1] < errors[0] and errors[-1] < 3.0, errors  # mean absolute error in 0..255 levels
    assert errors[2] < 8.0, errors


def test_jpeg_headers_dominate_at_16_px():
    _, streams = encode_streams(smooth_rgb(4), "jpeg", 50)
    for stream in streams:
        header = jpeg_header_bytes(stream)
        assert 100 < header < len(stream) and header > len(stream) / 2


def test_grey_rgb_is_coded_as_one_channel_unless_disabled():
    images = grey_as_rgb()
    decoded, grey_bits = encode_images(images, "png")
    np.testing.assert_array_equal(decoded, images)  # replicated back into 3 channels
    _, rgb_bits = encode_images(images, "png", grey=False)
    assert (grey_bits < rgb_bits).all()
    _, colour_bits = encode_images(smooth_rgb(4), "png")
    _, colour_bits_rgb = encode_images(smooth_rgb(4), "png", grey=False)
    np.testing.assert_array_equal(colour_bits, colour_bits_rgb)  # only equal channels collapse


@needs_webp
def test_webp_lossless_round_trip_is_exact():
    for images in (smooth_rgb(), noisy_rgb(), grey_as_rgb()):
        decoded, _ = encode_images(images, "webp", quality=100, lossless=True)
        np.testing.assert_array_equal(decoded, images)


@needs_webp
def test_webp_lossy_bits_increase_with_quality():
    images = smooth_rgb(8)
    means = [encode_images(images, "webp", quality)[1].mean() for quality in (5, 50, 95)]
    assert means[0] < means[1] < means[2], means


@pytest.mark.parametrize(
    "codec, options, message",
    [("gif", {}, "unknown codec"), ("jpeg", {"lossless": True}, "no lossless")],
)
def test_bad_codec_options_are_rejected(codec, options, message):
    with pytest.raises(ValueError, match=message):
        encode_images(smooth_rgb(1), codec, 50, **options)


def test_non_uint8_images_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        encode_images(smooth_rgb(1).astype(np.float32), "png")


# ---------------------------------------------------------------- matched accuracy


def synthetic_curve():
    """Accuracy rises with rate, with a non-monotone bump: q=20 beats q=30."""
    table = [(5, 100.0, 40.0), (10, 150.0, 70.0), (20, 200.0, 88.0), (30, 250.0, 86.0), (50, 300.0, 90.0),
             (90, 500.0, 91.0)]  # fmt: skip
    return [RatePoint(bits, accuracy, f"q={quality}") for quality, bits, accuracy in table]


@pytest.mark.parametrize(
    "target, expected",
    [(85.0, "q=20"), (88.0, "q=20"), (88.5, "q=50"), (91.0, "q=90"), (10.0, "q=5"), (91.5, None)],
)
def test_matched_accuracy_picks_the_cheapest_point_reaching_the_target(target, expected):
    points = synthetic_curve()
    for order in (points, points[::-1]):  # no assumption on the order of the sweep
        match = cheapest_reaching(order, target)
        assert (match.label if match else None) == expected


def test_matched_accuracy_tolerance_and_description():
    points = synthetic_curve()
    assert cheapest_reaching(points, 91.5, tolerance=0.5).label == "q=90"
    with pytest.raises(ValueError, match="tolerance"):
        cheapest_reaching(points, 90.0, tolerance=-1)
    assert cheapest_reaching([], 50.0) is None
    best = max(points, key=lambda point: point.accuracy)
    assert "never reaches 95.00%" in describe_match("jpeg", None, 95.0, best)
    assert "200.0 bits/image" in describe_match("jpeg", cheapest_reaching(points, 85.0), 85.0, best)
    assert [point.bits for point in by_rate(points[::-1])] == sorted(point.bits for point in points)


def test_a_match_at_the_cheapest_setting_is_reported_at_the_sweeps_edge():
    points = synthetic_curve()
    edge, inside = cheapest_reaching(points, 10.0), cheapest_reaching(points, 85.0)
    assert at_edge(edge, points) and not at_edge(inside, points) and not at_edge(None, points)
    line = describe_match("jpeg", edge, 10.0, edge, True)
    assert "cheapest setting tried: the codec's matched rate may be lower" in line
    assert "may be lower" not in describe_match("jpeg", inside, 85.0, inside, False)
