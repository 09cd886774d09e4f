"""Errors of portrait preparation: each message names the problem and its numbers.

All derive from MediaError, itself a ValueError, so callers that validate inputs with `except ValueError` keep
working; the gRPC server maps MediaError to INVALID_ARGUMENT.
"""
from __future__ import annotations

__all__ = [
    "MediaError", "ImageDecodeError", "ImageTooLargeError", "UnsupportedFormatError",
    "NoFaceError", "MultipleFacesError", "FaceTooSmallError",
]


class MediaError(ValueError):
    """Base class: an input image or video request that otavatar.media cannot use."""


class ImageDecodeError(MediaError):
    """The bytes are not a readable image (corrupt, truncated, empty, not an image at all)."""


class ImageTooLargeError(MediaError):
    """The file is over the byte cap, or its header declares more pixels than the pixel cap (decompression bomb)."""


class UnsupportedFormatError(MediaError):
    """A readable image in a format outside the allow-list (e.g. GIF or TIFF when only JPEG/PNG/WEBP/BMP pass)."""


class NoFaceError(MediaError):
    """The detector found no face above the score threshold."""


class MultipleFacesError(MediaError):
    """More than one face above the score threshold: the portrait is ambiguous."""


class FaceTooSmallError(MediaError):
    """The one face found is smaller than min_size pixels: too little detail to invert."""
