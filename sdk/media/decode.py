"""Decode an untrusted image into uint8 RGB with limits checked before the pixels are decoded.

Order of checks (each cheaper than the next, so a hostile file is rejected before it costs memory):

1. bytes: a path's size from `stat`, then at most max_bytes + 1 bytes read (the file may grow in between);
2. format: `Image.open` only parses the header (it is lazy), so the format is checked against the allow-list
   before any pixel decoder runs;
3. pixels: the header's width x height against max_pixels, still before decoding. Pillow's own decompression
   bomb guard (Image.MAX_IMAGE_PIXELS, 89.5 M by default) is turned from a warning into ImageTooLargeError, so a
   caller that raises max_pixels above Pillow's limit still gets an error, never a silent 1 GB allocation;
4. decode; truncated or corrupt data -> ImageDecodeError (Pillow's LOAD_TRUNCATED_IMAGES is never consulted:
   a truncated JPEG would otherwise decode with a grey bottom);
5. EXIF orientation applied (phones store portraits rotated with an orientation tag), alpha composited onto
   white (a transparent background renders as white, as a person viewing the file sees it), 16-bit grey scaled
   to 8 bits.

numpy + Pillow only.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from otavatar.media.errors import ImageDecodeError, ImageTooLargeError, MediaError, UnsupportedFormatError

__all__ = ["decode_image", "DEFAULT_FORMATS", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "ImageSource"]

DEFAULT_MAX_BYTES = 25 * 2**20          # 25 MiB: a 40 MP JPEG at quality 95 is ~15 MB
DEFAULT_MAX_PIXELS = 40_000_000         # 40 MP: above any phone camera; decoded RGB = 120 MB
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")

# Formats Pillow reports under another name: an iPhone/Android JPEG with a depth map or a second picture
# opens as "MPO" (Multi-Picture Object, a JPEG container), a JPEG 2000 codestream as "JPEG2000".
_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
_SUBFORMATS = {"JPEG": ("MPO",)}

# What Pillow raises on bad data: UnidentifiedImageError (an OSError) for unknown bytes, OSError for truncated
# data, SyntaxError/ValueError/struct.error/EOFError from individual plugins' header parsers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError, IndexError, TypeError)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def _allowed_formats(formats: tuple[str, ...] | list[str]) -> frozenset[str]:
    if isinstance(formats, str):
        raise TypeError(f"formats must be a sequence of format names such as ('JPEG', 'PNG'), got the string "
                        f"{formats!r}")
    Image.init()
    known = set(Image.OPEN)
    allowed = set()
    for name in formats:
        upper = _ALIASES.get(str(name).upper(), str(name).upper())
        if upper not in known:
            raise ValueError(f"unknown image format {name!r}; Pillow here opens: {', '.join(sorted(known))}")
        allowed.add(upper)
        allowed.update(_SUBFORMATS.get(upper, ()))
    if not allowed:
        raise ValueError("formats must name at least one image format, got an empty sequence")
    return frozenset(allowed)


def _check_limits(max_bytes: int, max_pixels: int) -> None:
    for name, value in (("max_bytes", max_bytes), ("max_pixels", max_pixels)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_pixels(label: str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{label}: image has an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{label}: {width}x{height} = {width * height:,} pixels is over the limit of "
                                 f"{max_pixels:,} (max_pixels); downscale the image first")


def _read_path(path: Path, max_bytes: int) -> bytes:
    label = path.name
    try:
        size = path.stat().st_size
    except OSError as err:
        raise ImageDecodeError(f"{label}: cannot read the file ({err.strerror or err})") from None
    if not path.is_file():
        raise ImageDecodeError(f"{label}: not a regular file")
    if size > max_bytes:
        raise ImageTooLargeError(f"{label}: file is {size:,} bytes, over the limit of {max_bytes:,} (max_bytes)")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)             # never more than the cap, even if the file grew since stat
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{label}: file is over the limit of {max_bytes:,} bytes (max_bytes)")
    return data


def _to_rgb(image: Image.Image) -> NDArray[np.uint8]:
    """Any Pillow mode -> uint8 [H,W,3]; alpha composited onto white; 16/32-bit grey scaled to 8 bits."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64)
        grey = grey / 257.0 if mode.startswith("I;16") or grey.max(initial=0) > 255 else grey  # 65535 -> 255
        return np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        scale = 255.0 if grey.max(initial=0) <= 1.0 else 1.0            # float images are [0,1] or [0,255]
        return np.repeat(np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info) \
        or (mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _decode_pil(image: Image.Image, label: str, allowed: frozenset[str], max_pixels: int) -> NDArray[np.uint8]:
    fmt = image.format
    if fmt is not None and fmt not in allowed:
        raise UnsupportedFormatError(f"{label}: {fmt} images are not accepted; allowed formats: "
                                     f"{', '.join(sorted(allowed))}")
    _check_pixels(label, image.width, image.height, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageTooLargeError(f"{label}: Pillow's decompression-bomb guard refused the image: {err}") from None
    except MediaError:
        raise
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(f"{label}: cannot decode the {fmt or 'image'} data ({err}); the file is corrupt "
                               f"or truncated") from None


def _decode_bytes(data: bytes, label: str, allowed: frozenset[str], max_bytes: int,
                  max_pixels: int) -> NDArray[np.uint8]:
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"{label}: {len(data):,} bytes, over the limit of {max_bytes:,} (max_bytes)")
    if len(data) == 0:
        raise ImageDecodeError(f"{label}: empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))             # parses the header only
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        # Image.open itself refuses headers over 2 x Image.MAX_IMAGE_PIXELS before we see the size
        raise ImageTooLargeError(f"{label}: the header declares too many pixels (limit {max_pixels:,}, "
                                 f"max_pixels): {err}") from None
    except _DECODE_ERRORS as err:
        raise ImageDecodeError(f"{label}: not a readable image ({type(err).__name__}: {err}); not an image, "
                               f"or corrupt or truncated (first bytes {data[:8]!r})") from None
    with image:
        return _decode_pil(image, label, allowed, max_pixels)


def _decode_array(array: np.ndarray, max_pixels: int) -> NDArray[np.uint8]:
    label = "image array"
    if array.dtype != np.uint8:
        raise ImageDecodeError(f"{label}: expected dtype uint8, got {array.dtype} (scale floats to 0..255 and "
                               f"cast first)")
    if array.ndim == 2:
        _check_pixels(label, array.shape[1], array.shape[0], max_pixels)
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageDecodeError(f"{label}: expected shape [H,W], [H,W,3] or [H,W,4], got {list(array.shape)}")
    _check_pixels(label, array.shape[1], array.shape[0], max_pixels)
    if array.shape[2] == 3:
        return np.ascontiguousarray(array).copy()
    alpha = array[..., 3:].astype(np.float32) / 255.0               # [H,W,1]
    rgb = array[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def decode_image(source: ImageSource, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 formats: tuple[str, ...] = DEFAULT_FORMATS) -> NDArray[np.uint8]:
    """Decode `source` into a uint8 RGB array [H,W,3], refusing what is too big or not allowed.

    source: a path (str / os.PathLike), encoded bytes (bytes / bytearray / memoryview), a PIL.Image (its
    format, when it came from a file, is checked against the allow-list), or a uint8 ndarray ([H,W,3] RGB;
    [H,W,4] RGBA, alpha composited onto white; [H,W] grey).
    max_bytes: cap on the encoded size (paths and bytes), checked before reading the file.
    max_pixels: cap on width x height, checked from the header before decoding.
    formats: Pillow format names allowed (JPEG also admits MPO, the multi-picture JPEG of phone cameras).

    Raises ImageTooLargeError, UnsupportedFormatError or ImageDecodeError (all MediaError, a ValueError),
    each naming the source and the numbers.
    """
    _check_limits(max_bytes, max_pixels)
    allowed = _allowed_formats(formats)
    if isinstance(source, np.ndarray):
        return _decode_array(source, max_pixels)
    if isinstance(source, Image.Image):
        label = Path(getattr(source, "filename", "") or "PIL image").name
        return _decode_pil(source, label, allowed, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), "image bytes", allowed, max_bytes, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _decode_bytes(_read_path(path, max_bytes), path.name, allowed, max_bytes, max_pixels)
    raise TypeError(f"decode_image takes a path, bytes, a PIL.Image or a uint8 ndarray, got "
                    f"{type(source).__name__}")
