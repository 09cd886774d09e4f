"""decode_image: every input form, and each limit refused before decoding with a MediaError naming it."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from otavatar.media import (ImageDecodeError, ImageTooLargeError, MediaError, UnsupportedFormatError,
                            decode_image)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    # smooth content so lossy codecs stay close: a gradient plus a little noise
    y, x = np.mgrid[0:24, 0:32]
    base = np.stack([x * 8, y * 10, (x + y) * 4], axis=-1)
    return np.clip(base + rng.integers(0, 8, base.shape), 0, 255).astype(np.uint8)


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR declaring width x height RGB, then a tiny IDAT and IEND: a bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP", "JPEG"])
def test_bytes_and_path_round_trip(rgb, encoder, tmp_path, fmt):
    lossless = fmt in ("PNG", "BMP")
    data = encoder(rgb, fmt, **({"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}))
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(data)
    for source in (data, bytearray(data), memoryview(data), path, str(path)):
        out = decode_image(source)
        assert out.dtype == np.uint8 and out.shape == rgb.shape
        tol = 0 if lossless or fmt == "WEBP" else 12        # JPEG q95 on a smooth gradient: max error ~10
        assert np.abs(out.astype(int) - rgb).max() <= tol


def test_array_forms(rgb):
    assert np.array_equal(decode_image(rgb), rgb)
    grey = rgb[..., 0]
    assert np.array_equal(decode_image(grey), np.repeat(grey[..., None], 3, axis=-1))
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=-1)
    rgba[:12, ..., 3] = 255                                 # top half opaque, bottom half fully transparent
    out = decode_image(rgba)
    assert np.array_equal(out[:12], rgb[:12]) and (out[12:] == 255).all()   # transparent -> white


def test_pil_image_and_alpha_png(rgb, encoder):
    pil = Image.fromarray(rgb)
    assert np.array_equal(decode_image(pil), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    out = decode_image(encoder(rgba, "PNG"))
    expected = np.rint(rgb * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(out - expected).max() <= 1


def test_sixteen_bit_grey_png_scales_to_8_bits(encoder):
    grey16 = np.array([[0, 65535], [257 * 100, 257 * 200]], dtype=np.uint16)
    out = decode_image(encoder(grey16, "PNG"))
    assert out[..., 0].tolist() == [[0, 255], [100, 200]]


def test_exif_orientation_applied(rgb):
    import io
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6                                        # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, format="PNG", exif=exif)
    out = decode_image(buf.getvalue())
    assert out.shape == (32, 24, 3)
    assert np.array_equal(out, np.rot90(rgb, k=-1))


def test_png_header_claiming_huge_size_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="max_pixels|pixels"):
        decode_image(_png_header(100_000, 100_000))
    # below Pillow's own bomb limit, our max_pixels decides, and the message names both numbers
    with pytest.raises(ImageTooLargeError, match=r"5000x5000 = 25,000,000 pixels .* 1,000,000"):
        decode_image(_png_header(5000, 5000), max_pixels=1_000_000)


def test_pillow_bomb_warning_becomes_an_error():
    # 10000 x 10000 = 100 M > Pillow's 89.5 M warning threshold; with max_pixels raised above it, the
    # DecompressionBombWarning must still become ImageTooLargeError (not a warning and a 300 MB decode)
    with pytest.raises(ImageTooLargeError):
        decode_image(_png_header(10_000, 10_000), max_pixels=200_000_000)


def test_array_over_pixel_cap(rgb):
    with pytest.raises(ImageTooLargeError, match="32x24"):
        decode_image(rgb, max_pixels=100)


def test_bytes_over_the_cap(rgb, encoder, tmp_path):
    data = encoder(rgb, "PNG")
    with pytest.raises(ImageTooLargeError, match=f"{len(data):,} bytes"):
        decode_image(data, max_bytes=len(data) - 1)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageTooLargeError, match="big.png"):
        decode_image(path, max_bytes=100)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_format_not_allowed(rgb, encoder, fmt):
    with pytest.raises(UnsupportedFormatError, match=fmt):
        decode_image(encoder(rgb, fmt))
    assert decode_image(encoder(rgb, fmt), formats=("PNG", fmt)).shape == rgb.shape   # allowed on request


def test_pil_image_from_a_disallowed_file(rgb, encoder):
    import io
    with Image.open(io.BytesIO(encoder(rgb, "GIF"))) as image, pytest.raises(UnsupportedFormatError):
        decode_image(image)


def test_corrupt_and_truncated(rgb, encoder):
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(b"this is not an image at all")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    big = np.tile(rgb, (8, 8, 1))                           # 192x256: the cut lands in the scan data
    jpeg = encoder(big, "JPEG", quality=90)
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(jpeg[:40])                             # cut inside the header
    png = encoder(rgb, "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(png[: len(png) - 40])


def test_errors_are_value_errors_and_bad_arguments(rgb, tmp_path):
    assert issubclass(MediaError, ValueError)
    with pytest.raises(ImageDecodeError, match="float32"):
        decode_image(rgb.astype(np.float32))
    with pytest.raises(ImageDecodeError, match=r"\[24, 32, 2\]"):
        decode_image(rgb[..., :2])
    with pytest.raises(ImageDecodeError, match="missing.png"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="unknown image format"):
        decode_image(rgb, formats=("PNG", "NOPE"))
    with pytest.raises(ValueError, match="max_bytes"):
        decode_image(rgb, max_bytes=0)
    with pytest.raises(TypeError, match="int"):
        decode_image(12)
