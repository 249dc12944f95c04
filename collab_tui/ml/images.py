"""Safe image decoding from bytes and image file collection.

Workers receive image *bytes*; `decode_image` validates them (size, magic,
declared dimensions, truncation) before handing them to OpenCV, so that a
decompression bomb or a truncated upload never reaches the decoder.
"""

from __future__ import annotations

import glob
import struct
from pathlib import Path

import numpy as np

from collab_tui.ml.cvload import cv2  # never `import cv2` (see cvload)

__all__ = [
    "ImageError",
    "SUPPORTED",
    "MAX_BYTES",
    "MAX_PIXELS",
    "sniff_format",
    "read_dimensions",
    "decode_image",
    "collect_images",
]

SUPPORTED = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 50_000_000

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (all except DHT C4, JPG C8, DAC CC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_GLOB_CHARS = set("*?[")


class ImageError(ValueError):
    """Bad image input. `code` is one of: empty, too_large, bomb, unsupported, corrupt."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def sniff_format(data: bytes) -> str | None:
    """Return "jpeg", "png", "bmp" or "webp" from the magic bytes, else None."""
    head = bytes(data[:16])
    if head.startswith(_PNG_SIG):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM") and len(head) >= 14:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


# (width, height, truncation problem or None): sizes are checked before completeness,
# so a bomb is reported as "bomb" even when it is also cut short.
_Info = tuple[int, int, str | None]


def _need(data: bytes, n: int, fmt: str) -> None:
    if len(data) < n:
        raise ImageError("corrupt", f"{fmt} header truncated ({len(data)} bytes)")


def _png_info(data: bytes) -> _Info:
    _need(data, 33, "PNG")
    if data[12:16] != b"IHDR":
        raise ImageError("corrupt", "PNG has no IHDR chunk first")
    w, h = struct.unpack(">II", data[16:24])
    return w, h, None if data.rfind(b"IEND") >= 0 else "PNG truncated (no IEND chunk)"


def _jpeg_info(data: bytes) -> _Info:
    """Walk JPEG segments to the SOF marker; look for an EOI after the first scan."""
    n = len(data)
    i = 2
    size: tuple[int, int] | None = None
    while i < n:
        if data[i] != 0xFF:
            raise ImageError("corrupt", f"JPEG marker expected at offset {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # standalone markers
        if marker == 0xD9:
            raise ImageError("corrupt", "JPEG ends before any image scan")
        _need(data, i + 2, "JPEG")
        (seg_len,) = struct.unpack(">H", data[i : i + 2])
        if seg_len < 2:
            raise ImageError("corrupt", "JPEG segment length invalid")
        if marker in _SOF_MARKERS:
            _need(data, i + 7, "JPEG")
            h, w = struct.unpack(">HH", data[i + 3 : i + 7])
            size = (w, h)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if size is None:
                raise ImageError("corrupt", "JPEG scan before frame header")
            # 0xFF inside entropy data is stuffed (FF00), so FFD9 here is the EOI.
            eoi = data.find(b"\xff\xd9", i + seg_len) >= 0
            return size[0], size[1], None if eoi else "JPEG truncated (no EOI marker)"
        i += seg_len
    if size is not None:
        return size[0], size[1], "JPEG truncated (no image scan)"
    raise ImageError("corrupt", "JPEG truncated (no frame header found)")


def _bmp_info(data: bytes) -> _Info:
    _need(data, 26, "BMP")
    (declared,) = struct.unpack("<I", data[2:6])
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        w, h = struct.unpack("<hh", data[18:22])
    elif dib >= 40:
        w, h = struct.unpack("<ii", data[18:26])
    else:
        raise ImageError("corrupt", f"BMP header size {dib} not supported")
    short = f"BMP truncated ({len(data)} of {declared} bytes)" if len(data) < declared else None
    return abs(w), abs(h), short


def _webp_info(data: bytes) -> _Info:
    _need(data, 30, "WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    short = f"WebP truncated ({len(data)} of {riff_size + 8} bytes)" if len(data) < riff_size + 8 else None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageError("corrupt", "WebP VP8 start code missing")
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF, short
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ImageError("corrupt", "WebP VP8L signature missing")
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, short
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h, short
    raise ImageError("corrupt", f"WebP chunk {chunk!r} not recognised")


_INFO = {"png": _png_info, "jpeg": _jpeg_info, "bmp": _bmp_info, "webp": _webp_info}


def _header(data: bytes) -> tuple[str, int, int, str | None]:
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("unsupported", f"unknown image format (magic {bytes(data[:8])!r})")
    w, h, short = _INFO[fmt](data)
    if w <= 0 or h <= 0:
        raise ImageError("corrupt", f"{fmt} declares empty size {w}x{h}")
    return fmt, w, h, short


def read_dimensions(data: bytes) -> tuple[str, int, int]:
    """Return (format, width, height) declared in the header, without decoding pixels."""
    fmt, w, h, _ = _header(data)
    return fmt, w, h


def decode_image(data: bytes, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into a BGR uint8 array (H, W, 3), refusing unsafe input."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not data:
        raise ImageError("empty", "no image data")
    if len(data) > max_bytes:
        raise ImageError("too_large", f"{len(data)} bytes exceeds limit of {max_bytes}")
    fmt, w, h, short = _header(data)
    if w * h > max_pixels:
        raise ImageError("bomb", f"{fmt} declares {w}x{h} = {w * h} pixels (limit {max_pixels})")
    if short:
        raise ImageError("corrupt", short)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError("corrupt", f"{fmt} decode failed: {exc}") from exc
    if img is None or img.size == 0:
        raise ImageError("corrupt", f"{fmt} could not be decoded")
    if img.dtype != np.uint8:  # defensive: IMREAD_COLOR normally gives 8-bit
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return img


def _supported(p: Path) -> bool:
    return p.suffix.lower() in SUPPORTED


def _walk(folder: Path) -> list[Path]:
    """Supported files under `folder`, recursive, sorted; hidden entries skipped."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.is_file() and _supported(p):
            out.append(p)
    return sorted(out)


def collect_images(paths: list[str]) -> list[Path]:
    """Expand files, folders (recursive) and glob patterns into an ordered, de-duplicated list.

    Folders and globs yield only SUPPORTED suffixes (case-insensitive); an explicitly
    named file is kept whatever its suffix (it fails later, per item, as "unsupported").
    A path that is neither a file, a folder nor a matching glob raises FileNotFoundError.
    """
    result: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            result.append(p)

    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_file():
            add(p)
        elif p.is_dir():
            for f in _walk(p):
                add(f)
        elif _GLOB_CHARS & set(str(raw)):
            matches = sorted(glob.glob(str(p), recursive=True))
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    for f in _walk(mp):
                        add(f)
                elif mp.is_file() and _supported(mp):
                    add(mp)
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    return result
