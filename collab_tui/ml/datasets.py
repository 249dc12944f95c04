"""Local datasets for federated training: loaders, partitioners and a named-dataset registry.

numpy only at import (OpenCV and scikit-learn are imported inside the loaders that need them).
Privacy by structure: no network code here; arrays go only to the local training code.
Images are float32 in [0, 1] with shape (N, H, W, C); labels are int64 indices into ``labels``.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import re
import struct
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fsutil import atomic_write, child_path, set_aside

log = logging.getLogger("collab.ml.datasets")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MNIST_LABELS = [str(i) for i in range(10)]
MNIST_TRAIN_POOL = (0, 8000)  # fl_protocol.json data.train_pool
MNIST_EVAL_SET = (8000, 10000)  # fl_protocol.json data.eval_set
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# A dataset part received from a peer (`collab data split`): what it may take once loaded, and how many
# arrays it may hold (x, y and a few spare); past RATIO_FLOOR it may not be more than MAX_RATIO times
# bigger than the bytes that came (np.savez does not compress; real images deflate far less than that).
MAX_PART_BYTES = 512 * 1024 * 1024
MAX_PART_ARRAYS = 8
MAX_RATIO = 200
RATIO_FLOOR = 16 * 1024 * 1024
MAX_CLASSES = 4096  # classes of a dataset part: labels given, or labels 0..max(y) made up at load


class DatasetError(ValueError):
    """Bad dataset file, spec or name."""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        shown = repr(name[:40]) if isinstance(name, str) else type(name).__name__
        raise DatasetError(f"bad dataset name {shown} (letters, digits, . _ -; max 64)")
    return name


# ------------------------------------------------------------------ archives from elsewhere
def check_npz(data: bytes, max_bytes: int, max_arrays: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The arrays an ``.npz`` holds (name -> (shape, dtype)), read from the zip directory and each array's
    ``.npy`` header only, before anything is loaded: a small file may declare a huge member (a zip bomb),
    and a ``.npy`` header may declare a huge shape, which ``np.load`` would allocate first. Refused
    (`DatasetError`): more than ``max_arrays`` members, more than ``max_bytes`` uncompressed, a ratio past
    `MAX_RATIO`, a member that is not a plain ``.npy`` array (object dtypes need pickle) or that declares
    more data than it holds."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"not an npz archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_arrays:
            raise DatasetError(f"the archive holds {len(infos)} members, at most {max_arrays} are taken")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise DatasetError(f"the archive unpacks to {total} bytes, more than the limit of {max_bytes}")
        if total > RATIO_FLOOR and total > MAX_RATIO * len(data):
            raise DatasetError(f"the archive unpacks {total / max(1, len(data)):.0f} times its size (a zip bomb?)")
        out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for info in infos:
            key = info.filename.removesuffix(".npy")
            if key == info.filename or not key:
                raise DatasetError(f"member {info.filename[:40]!r} is not a .npy array")
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"npy format {version} is not taken")
                    header = f.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
                raise DatasetError(f"member {key[:40]!r}: {exc}") from None
            if dtype.hasobject:
                raise DatasetError(f"member {key[:40]!r} holds Python objects")
            need = math.prod(shape) * dtype.itemsize
            if need > info.file_size - header:
                raise DatasetError(f"member {key[:40]!r} declares {need} bytes but holds {info.file_size - header}")
            out[key] = (tuple(shape), dtype)
        return out


def load_part(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A dataset part as sent by `collab data split` (an npz of ``x`` (N, H, W, C) numbers and ``y`` (N,)
    class indices), checked (`check_npz`) before it is loaded, and checked again once loaded."""
    arrays = check_npz(data, MAX_PART_BYTES, MAX_PART_ARRAYS)
    if "x" not in arrays or "y" not in arrays:
        raise DatasetError("a dataset part needs arrays x and y")
    (xs, xt), (ys, yt) = arrays["x"], arrays["y"]
    if len(xs) != 4 or xt.kind not in "fiu":
        raise DatasetError(f"x must be (N, H, W, C) numbers, got {xs} {xt}")
    if len(ys) != 1 or yt.kind not in "iu" or ys[0] != xs[0]:
        raise DatasetError(f"y must be {xs[0]} integer class indices, got {ys} {yt}")
    try:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot load the dataset part: {exc}") from None
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise DatasetError("x holds NaN or infinite values")
    return x, y


# ------------------------------------------------------------------ loaders
def _folder_label(path: Path, root: Path) -> str:
    """Label from the first sub-folder under ``root``, else from the file name (``cat.12.jpg`` -> cat)."""
    rel = path.relative_to(root).parts
    if len(rel) > 1:
        return rel[0]
    stem = path.stem
    if "." in stem:
        return stem.split(".", 1)[0]
    return re.sub(r"[_\-\s]*\d+$", "", stem) or stem


def _folder_files(root: Path) -> list[Path]:
    """The image files of a folder dataset, sorted (hidden entries left out)."""
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _to_input(img_bgr: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    from collab_tui.ml.cvload import import_cv2

    cv2 = import_cv2()

    h, w, c = (int(v) for v in input_shape)
    img = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2GRAY) if c == 1 else cv2.cvtColor(img_bgr, cv2.COLOR_BGR2RGB)
    interp = cv2.INTER_AREA if (img.shape[0] > h or img.shape[1] > w) else cv2.INTER_LINEAR
    img = cv2.resize(img, (w, h), interpolation=interp)
    return (img.astype(np.float32) / 255.0).reshape(h, w, c)


def load_folder(
    path: str | Path, input_shape: Sequence[int] = (28, 28, 1), skipped: list | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images under ``path`` as (x, y, labels); labels sorted, y indexes them.

    Layouts: ``DIR/<label>/*.jpg`` (any depth below the label folder) and/or files directly in
    DIR labelled by name (``cat.12.jpg`` -> "cat", ``dog_3.png`` -> "dog"). Hidden entries are
    ignored. Unreadable files are skipped with a warning; ``skipped`` (if given) receives
    ``(path, reason)`` tuples.
    """
    from collab_tui.ml.cvload import import_cv2
    from collab_tui.ml.images import decode_image

    cv2 = import_cv2()

    if len(input_shape) != 3 or int(input_shape[2]) not in (1, 3):
        raise DatasetError(f"input_shape must be (H, W, 1|3), got {tuple(input_shape)}")
    root = Path(path).expanduser()
    files = _folder_files(root)
    xs: list[np.ndarray] = []
    names: list[str] = []
    bad: list[tuple[str, str]] = []
    for f in files:
        try:
            xs.append(_to_input(decode_image(f.read_bytes()), input_shape))
            names.append(_folder_label(f, root))
        except (OSError, ValueError, cv2.error) as exc:
            bad.append((str(f), str(exc)))
            log.warning("skipping unreadable image %s: %s", f, exc)
    if bad:
        log.warning("%d of %d images under %s could not be read", len(bad), len(files), root)
    if skipped is not None:
        skipped.extend(bad)
    if not xs:
        raise DatasetError(f"no readable images under {root}")
    labels = sorted(set(names))
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.asarray([index[n] for n in names], np.int64)
    return np.stack(xs).astype(np.float32), y, labels


def load_digits8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1,797 images, shipped with sklearn): x (N, 8, 8, 1) in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.float32) / 16.0)[..., None], d.target.astype(np.int64)


def _read_idx(path: Path, magic: int, header: str) -> tuple[tuple[int, ...], bytes]:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path.name}: cannot read: {exc}") from exc
    size = struct.calcsize(header)
    if len(raw) < size:
        raise DatasetError(f"{path.name}: truncated header")
    fields = struct.unpack(header, raw[:size])
    if fields[0] != magic:
        raise DatasetError(f"{path.name}: bad magic {fields[0]} (expected {magic})")
    body = raw[size:]
    expected = int(np.prod(fields[1:]))
    if len(body) != expected:
        raise DatasetError(f"{path.name}: {len(body)} data bytes, header says {expected}")
    return fields[1:], body


def _find(folder: Path, name: str) -> Path:
    for cand in (folder / name, folder / name.removesuffix(".gz")):
        if cand.is_file():
            return cand
    raise DatasetError(f"{name} not found in {folder}")


def load_mnist(folder: str | Path, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """MNIST IDX files ``{split}-images-idx3-ubyte.gz`` / ``{split}-labels-idx1-ubyte.gz`` (or
    uncompressed) as x (N, 28, 28, 1) float32 = pixels / 255 and y int64. Raises DatasetError."""
    folder = Path(folder).expanduser()
    (n, rows, cols), pix = _read_idx(_find(folder, f"{split}-images-idx3-ubyte.gz"), 2051, ">IIII")
    (m,), lab = _read_idx(_find(folder, f"{split}-labels-idx1-ubyte.gz"), 2049, ">II")
    if n != m:
        raise DatasetError(f"{n} images but {m} labels in {folder}")
    y = np.frombuffer(lab, np.uint8).astype(np.int64)
    if y.size and y.max() > 9:
        raise DatasetError(f"label {int(y.max())} out of range 0..9")
    x = np.frombuffer(pix, np.uint8).reshape(n, rows, cols, 1).astype(np.float32) / np.float32(255.0)
    return x, y


# ------------------------------------------------------------- partitioners
def _check_clients(num_clients: int) -> None:
    if int(num_clients) < 1:
        raise DatasetError(f"num_clients must be >= 1, got {num_clients}")


def partition_iid(n: int, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """``default_rng(seed).permutation(n)`` split into ``num_clients`` (near-)equal contiguous parts."""
    _check_clients(num_clients)
    perm = np.random.default_rng(seed).permutation(int(n))
    return [np.asarray(p, np.int64) for p in np.array_split(perm, int(num_clients))]


def partition_label_shards(
    y: np.ndarray, num_clients: int, num_shards: int | None = None, shard_size: int | None = None
) -> list[np.ndarray]:
    """McMahan et al. label skew: stable-argsort the labels, cut ``num_shards`` shards of
    ``shard_size``; client i gets shards i, i + K, i + 2K, ... (K = num_clients), in that order.
    Defaults: 2 shards per client, shard_size = len(y) // num_shards."""
    _check_clients(num_clients)
    y = np.asarray(y)
    k = int(num_clients)
    num_shards = 2 * k if num_shards is None else int(num_shards)
    if num_shards < k or num_shards % k:
        raise DatasetError(f"num_shards ({num_shards}) must be a positive multiple of num_clients ({k})")
    shard_size = len(y) // num_shards if shard_size is None else int(shard_size)
    if shard_size < 1 or num_shards * shard_size > len(y):
        raise DatasetError(f"{num_shards} shards of {shard_size} do not fit in {len(y)} examples")
    order = np.argsort(y, kind="stable")
    shards = [order[j * shard_size : (j + 1) * shard_size] for j in range(num_shards)]
    return [np.concatenate(shards[i::k]).astype(np.int64) for i in range(k)]


def partition_dirichlet(
    y: np.ndarray, num_clients: int, alpha: float = 0.5, seed: int = 0, min_size: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Per class, split its (shuffled) examples among clients with proportions ~ Dir(alpha).
    Redraws (deterministically, same rng) until every client has ``min_size`` examples or
    ``max_tries`` is reached. Every index is assigned exactly once; each part is sorted."""
    _check_clients(num_clients)
    if not alpha > 0:
        raise DatasetError(f"alpha must be > 0, got {alpha}")
    y = np.asarray(y)
    k = int(num_clients)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    for _ in range(max(1, max_tries)):
        buckets: list[list[np.ndarray]] = [[] for _ in range(k)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(k, float(alpha)))) * len(idx)).astype(int)[:-1]
            for i, chunk in enumerate(np.split(idx, cuts)):
                buckets[i].append(chunk)
        parts = [np.sort(np.concatenate(b)).astype(np.int64) if b else np.zeros(0, np.int64) for b in buckets]
        if min(len(p) for p in parts) >= min_size:
            break
    return parts


def split_holdout(
    x: np.ndarray, y: np.ndarray, frac: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random split into (x_train, y_train, x_holdout, y_holdout); holdout = round(frac * n)."""
    if not 0.0 <= frac < 1.0:
        raise DatasetError(f"frac must be in [0, 1), got {frac}")
    n = len(y)
    if len(x) != n:
        raise DatasetError(f"{len(x)} inputs but {n} labels")
    perm = np.random.default_rng(seed).permutation(n)
    n_ho = int(round(frac * n))
    ho, tr = np.sort(perm[:n_ho]), np.sort(perm[n_ho:])
    return x[tr], y[tr], x[ho], y[ho]


def relabel(x: np.ndarray, y: np.ndarray, own: Sequence[str], labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Re-index ``y`` (indices into ``own``) onto ``labels`` (a model's class names), by name; examples of
    classes ``labels`` does not name are left out."""
    index = {name: i for i, name in enumerate(labels)}
    new = np.array([index.get(str(own[int(v)]), -1) if 0 <= int(v) < len(own) else -1 for v in y], dtype=np.int64)
    keep = new >= 0
    return x[keep], new[keep]


def augment_images(x: np.ndarray, rng: np.random.Generator, shift: float = 0.1, jitter: float = 0.0) -> np.ndarray:
    """A randomly flipped (left-right, half of them) and shifted (up to ``shift`` of the side, edges
    repeated: a random crop of the same size) copy of a batch (N, H, W, C) of pixels in [0, 1]; with
    ``jitter`` each image's brightness, contrast and (colour images) saturation are also scaled by factors
    drawn from [1 - jitter, 1 + jitter], clipped to [0, 1]."""
    out = _flip_shift(x, rng, shift)
    return _colour_jitter(out, rng, jitter) if jitter > 0 else out


def _colour_jitter(x: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    n = x.shape[0]
    factors = rng.uniform(1 - jitter, 1 + jitter, (3, n, 1, 1, 1)).astype(np.float32)
    out = x * factors[0]  # brightness
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = (out - mean) * factors[1] + mean  # contrast
    if x.shape[3] == 3:
        gray = out.mean(axis=3, keepdims=True)
        out = (out - gray) * factors[2] + gray  # saturation
    return np.clip(out, 0.0, 1.0).astype(x.dtype)


def _flip_shift(x: np.ndarray, rng: np.random.Generator, shift: float) -> np.ndarray:
    out = np.empty_like(x)
    n, h, w = x.shape[:3]
    flips = rng.random(n) < 0.5
    dy = rng.integers(-int(h * shift), int(h * shift) + 1, n)
    dx = rng.integers(-int(w * shift), int(w * shift) + 1, n)
    rows, cols = np.arange(h), np.arange(w)
    for i in range(n):
        img = x[i, :, ::-1] if flips[i] else x[i]
        out[i] = img[np.clip(rows - dy[i], 0, h - 1)][:, np.clip(cols - dx[i], 0, w - 1)]
    return out


def image_sizes(files: Sequence[Path]) -> dict[str, Any]:
    """The photos' own sizes (from their headers, before resizing): smallest, median and largest area as
    "WxH", and how many formats."""
    from PIL import Image

    sizes, formats = [], set()
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                formats.add(str(im.format))
        except (OSError, ValueError):
            continue
    if not sizes:
        return {}
    by_area = sorted(sizes, key=lambda s: s[0] * s[1])
    fmt = "{}x{}".format
    return {
        "min": fmt(*by_area[0]),
        "median": fmt(*by_area[len(by_area) // 2]),
        "max": fmt(*by_area[-1]),
        "formats": sorted(formats),
    }


def dataset_stats(y: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """{"count", "num_classes", "per_label": {label: count}} (labels with 0 examples included)."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=len(labels)) if len(y) else np.zeros(len(labels), int)
    return {
        "count": int(len(y)),
        "num_classes": len(labels),
        "per_label": {str(lab): int(counts[i]) for i, lab in enumerate(labels)},
    }


# ----------------------------------------------------------------- registry
_KINDS = ("folder", "digits", "mnist", "npz")
_SCHEMES = ("iid", "shards", "dirichlet")


def _check_spec(spec: dict) -> dict:
    if not isinstance(spec, dict):
        raise DatasetError("spec must be a JSON object")
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise DatasetError(f"kind must be one of {_KINDS}, got {kind!r}")
    if kind in ("folder", "npz") and not spec.get("path"):
        raise DatasetError(f"a {kind} dataset needs 'path'")
    if spec.get("subset", "all") not in ("all", "train", "eval"):
        raise DatasetError(f"subset must be all|train|eval, got {spec.get('subset')!r}")
    if kind != "mnist" and spec.get("subset", "all") != "all":
        raise DatasetError("subset train/eval is only defined for mnist")
    part = spec.get("partition")
    if part is not None:
        if not isinstance(part, dict) or part.get("scheme") not in _SCHEMES:
            raise DatasetError(f"partition.scheme must be one of {_SCHEMES}")
        k, i = part.get("num_clients"), part.get("client")
        if not isinstance(k, int) or not isinstance(i, int) or k < 1 or not 0 <= i < k:
            raise DatasetError("partition needs integers num_clients >= 1 and 0 <= client < num_clients")
    shape = spec.get("input_shape", [1, 1, 1])
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in shape):
        raise DatasetError("input_shape must be [H, W, C], positive integers")
    return json.loads(json.dumps(spec))  # a JSON-able copy


def apply_partition(x: np.ndarray, y: np.ndarray, part: dict) -> tuple[np.ndarray, np.ndarray]:
    """Select one client's part per a spec's ``partition`` dict."""
    k, i, scheme = int(part["num_clients"]), int(part["client"]), part["scheme"]
    if scheme == "iid":
        parts = partition_iid(len(y), k, int(part.get("seed", 0)))
    elif scheme == "shards":
        parts = partition_label_shards(y, k, part.get("num_shards"), part.get("shard_size"))
    else:
        parts = partition_dirichlet(y, k, float(part.get("alpha", 0.5)), int(part.get("seed", 0)))
    return x[parts[i]], y[parts[i]]


class DatasetRegistry:
    """Named dataset specs in ``home/state/datasets.json``.

    spec: {"kind": "folder", "path": DIR, "input_shape": [H, W, C]} or {"kind": "digits"|"mnist",
    "path": DIR (mnist; default $COLLAB_MNIST_DIR or home/data/mnist), "subset": "all"|"train"|
    "eval" (mnist default "train" = the protocol's first 8,000)}, optionally with
    "partition": {"scheme": "iid"|"shards"|"dirichlet", "num_clients": K, "client": i, "seed", "alpha",
    "num_shards", "shard_size"}. The mnist subset is taken first, then the client's part.
    """

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home)
        self.path = self.home / "state" / "datasets.json"
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict]:
        """The registered specs. A file that does not parse or whose entries do not check is moved aside
        (``datasets.json.bad-<unix time>``) with one warning: the node starts without them, the user adds
        them again, instead of a node that cannot start."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise DatasetError(f"{self.path}: unreadable: {exc}") from exc
        try:
            items = json.loads(raw)["datasets"]
            if not isinstance(items, dict):
                raise DatasetError("'datasets' is not an object")
            return {check_name(name): _check_spec(spec) for name, spec in items.items()}
        except (ValueError, TypeError, KeyError, RecursionError) as exc:  # DatasetError is a ValueError
            set_aside(self.path, f"dataset list: {exc}", logger=log)
            return {}

    def _write(self, items: dict[str, dict]) -> None:
        atomic_write(self.path, json.dumps({"datasets": items}, indent=1, sort_keys=True).encode())

    def add(self, name: str, spec: dict) -> dict:
        check_name(name)
        spec = _check_spec(spec)
        if spec["kind"] == "folder":
            spec["path"] = str(Path(spec["path"]).expanduser().resolve())
        with self._lock:
            items = self._read()
            items[name] = spec
            self._write(items)
        return spec

    def receive_part(self, name: str, data: bytes, labels: Sequence[str] = ()) -> int:
        """Keep a dataset part a peer sent (`collab data split`) as ``home/datasets/NAME.npz`` and register
        it; returns its number of examples. Everything is checked before anything is written: the name,
        the archive (`load_part`), the labels against ``y``."""
        path = child_path(self.home / "datasets", f"{check_name(name)}.npz")
        labels = [str(v) for v in labels]
        if len(labels) > MAX_CLASSES:
            raise DatasetError(f"{len(labels)} labels, at most {MAX_CLASSES} are taken")
        x, y = load_part(data)
        classes = len(labels) or MAX_CLASSES
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise DatasetError(f"y holds class indices outside 0..{classes - 1}")
        buf = io.BytesIO()
        np.savez(buf, x=x, y=y, labels=np.array(labels, dtype=str))
        atomic_write(path, buf.getvalue())
        self.add(name, {"kind": "npz", "path": str(path)})
        return int(len(y))

    def remove(self, name: str) -> None:
        with self._lock:
            items = self._read()
            if items.pop(name, None) is None:
                raise KeyError(f"no dataset named {name!r}")
            self._write(items)

    def get(self, name: str) -> dict:
        items = self._read()
        if name not in items:
            raise KeyError(f"no dataset named {name!r}")
        return items[name]

    def list(self) -> list[dict]:
        return [{"name": n, **s} for n, s in sorted(self._read().items())]

    def _mnist_dir(self, spec: dict) -> Path:
        return Path(spec.get("path") or os.environ.get("COLLAB_MNIST_DIR") or self.home / "data" / "mnist")

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        spec = self.get(name)
        kind = spec["kind"]
        if kind == "folder":
            x, y, labels = load_folder(spec["path"], tuple(spec.get("input_shape", (28, 28, 1))))
        elif kind == "npz":  # a part dealt out by `collab data split`
            with np.load(spec["path"], allow_pickle=False) as z:
                x, y = z["x"].astype(np.float32), z["y"].astype(np.int64)
                labels = (
                    [str(v) for v in z["labels"]]
                    if "labels" in z and len(z["labels"])
                    else [str(i) for i in range(int(y.max()) + 1 if len(y) else 0)]
                )
        elif kind == "digits":
            (x, y), labels = load_digits8(), [str(i) for i in range(10)]
        else:
            (x, y), labels = load_mnist(self._mnist_dir(spec)), list(MNIST_LABELS)
            sub = spec.get("subset", "train")
            if sub != "all":
                lo, hi = MNIST_TRAIN_POOL if sub == "train" else MNIST_EVAL_SET
                x, y = x[lo:hi], y[lo:hi]
        if spec.get("partition"):
            x, y = apply_partition(x, y, spec["partition"])
        return x, y, labels

    def describe(self, name: str) -> dict[str, Any]:
        """{"input_shape", "labels"} of a dataset: what a model trained on it takes and names. Cheap for a
        folder (its file names, no image decoded); the other kinds are loaded."""
        spec = self.get(name)
        if spec["kind"] == "folder":
            root = Path(spec["path"]).expanduser()
            labels = sorted({_folder_label(f, root) for f in _folder_files(root)})
            return {"input_shape": list(spec.get("input_shape", (28, 28, 1))), "labels": labels}
        st = self.stats(name)
        return {"input_shape": st["input_shape"], "labels": list(st["per_label"])}

    def stats(self, name: str) -> dict[str, Any]:
        """Per-class counts and balance; for a folder also the photos' own sizes and the files skipped."""
        spec = self.get(name)
        skipped: list[tuple[str, str]] = []
        if spec["kind"] == "folder":
            x, y, labels = load_folder(spec["path"], tuple(spec.get("input_shape", (28, 28, 1))), skipped)
        else:
            x, y, labels = self.load(name)
        out = dataset_stats(y, labels)
        out["input_shape"] = list(x.shape[1:])
        out["name"] = name
        counts = [c for c in out["per_label"].values() if c]
        out["balance"] = round(min(counts) / max(counts), 3) if counts else 0.0  # smallest class / largest
        if spec["kind"] == "folder":
            bad = {p for p, _ in skipped}
            out["image_sizes"] = image_sizes([f for f in _folder_files(Path(spec["path"])) if str(f) not in bad])
            out["skipped"] = len(skipped)
            out["skipped_files"] = [f"{Path(p).name}: {why[:120]}" for p, why in skipped[:20]]
        return out
