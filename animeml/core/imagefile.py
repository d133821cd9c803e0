"""The one checked way to open an image file: the header first (a 17 KB PNG can claim 12000x12000 pixels), then a
full decode (a truncated file fails here, not deep inside TensorFlow or OpenCV), and a reason when it fails.

    check_image(path)                       # raises ImageUnreadable, or returns (width, height)
    check_header(path)                      # the same checks but the decode (the caller decodes and reports)
    read_rgb(path)                          # uint8 RGB array (H, W, 3), at most MAX_PIXELS
    read_rgb(path, 4_000_000, downsize=True)  # larger images are reduced instead of refused

Nothing above MAX_PIXELS is ever decoded at full size: with `downsize=True` a JPEG is decoded at 1/2, 1/4 or 1/8
scale (`Image.draft`) when that brings it under the cap; other formats above the cap are refused with a reason.
"""
import warnings
from pathlib import Path

import numpy as np

from animeml.core.io import PipelineError

MAX_PIXELS = 40_000_000  # about 120 MB as RGB: the largest image any step decodes
TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP")  # what tf.io.decode_image reads
CORRUPT = (OSError, ValueError, SyntaxError)  # what PIL raises on truncated and corrupt data


class ImageUnreadable(PipelineError):
    """An image file that cannot be used; the message is the reason (it names the file)."""


def _decoded(path, max_pixels, downsize, formats):
    """The fully decoded PIL image of `path` (at most MAX_PIXELS, and `max_pixels` unless `downsize`)."""
    image = _opened(path, max_pixels, downsize, formats)
    try:
        image.load()
    except CORRUPT as err:
        image.close()
        raise corrupt(path, err) from None
    return image


def corrupt(path, err):
    """The ImageUnreadable for data a decoder could not read."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ImageUnreadable(f"{path} is truncated or corrupt ({reason})")


def _opened(path, max_pixels, downsize, formats):
    """The PIL image of `path` with only its header read, checked as _decoded says."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ImageUnreadable(f"{path} is a folder, not an image")
    if not path.is_file():
        raise ImageUnreadable(f"{path} not found")
    if path.stat().st_size == 0:
        raise ImageUnreadable(f"{path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # the pixel count is checked below, against our own cap
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        raise ImageUnreadable(f"{path} is not a readable image file") from None
    except Image.DecompressionBombError:
        raise ImageUnreadable(f"{path} has too many pixels to decode safely") from None
    except OSError as err:
        raise ImageUnreadable(f"{path} cannot be read: {err.strerror or err}") from None
    try:
        if formats and image.format not in formats:
            raise ImageUnreadable(f"{path} is a {image.format} image; this step reads {', '.join(formats)}")
        width, height = image.size
        if width * height > max_pixels:
            if not downsize:
                raise ImageUnreadable(f"{path} has too many pixels: {width}x{height} is above the cap of "
                                      f"{max_pixels / 1e6:g} megapixels")
            scale = next((s for s in (2, 4, 8) if (width // s) * (height // s) <= max_pixels), 8)
            image.draft("RGB", (width // scale, height // scale))  # JPEG only: decodes at 1/scale
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise ImageUnreadable(f"{path} has too many pixels: {width}x{height} is above the cap of "
                                      f"{MAX_PIXELS / 1e6:g} megapixels and cannot be decoded smaller")
    except ImageUnreadable:
        image.close()
        raise
    except CORRUPT as err:
        image.close()
        raise corrupt(path, err) from None
    return image


def _fitting(width, height, max_pixels):
    """The largest (width, height) of the same aspect with at most `max_pixels` pixels."""
    scale = min(1.0, (max_pixels / (width * height)) ** 0.5)
    return max(1, int(width * scale)), max(1, int(height * scale))


def check_image(path, max_pixels=MAX_PIXELS, formats=None):
    """(width, height) of an image file that decodes completely; ImageUnreadable with the reason otherwise.
    `formats`: PIL format names the caller can read (e.g. TF_FORMATS), others are refused."""
    with _decoded(path, max_pixels, False, formats) as image:
        return image.size


def check_header(path, max_pixels=MAX_PIXELS, formats=None):
    """check_image without the decode: (width, height) from the header, for a caller whose own decoder reports
    truncated or corrupt data (animeml.core.images.read_image)."""
    with _opened(path, max_pixels, False, formats) as image:
        return image.size


def read_rgb(path, max_pixels=MAX_PIXELS, downsize=False):
    """An image file as a uint8 RGB array (H, W, 3) with at most `max_pixels` pixels. Above that it is refused
    (ImageUnreadable), or with `downsize=True` reduced to fit (aspect kept)."""
    with _decoded(path, max_pixels, downsize, None) as image:
        rgb = image.convert("RGB")
    if rgb.size[0] * rgb.size[1] > max_pixels:
        rgb.thumbnail(_fitting(*rgb.size, max_pixels))
    return np.asarray(rgb)
