"""Image data: the Fashion-MNIST loader (Debian ``dataset-fashion-mnist`` files), the
scikit-learn digits fallback, the sketch-like domain shift and the paper's provider / client /
forget splits.

Layout: loaders return raw ``uint8`` images ``(N, 28, 28)`` and ``int64`` labels; the splits
hold **float32 NHWC images in [0, 1], shape (N, 28, 28, 1)**, and ``int32`` labels — the layout
:mod:`zkapex_jax.models`' losses take.

The split mirrors ZK-APEX's ViT study (arXiv 2512.09953; see ``PAPER.md``):

* the provider's **global model** trains on all classes (``global_train``), minus the images
  that are the client's private data;
* the **forget set** is a group of classes — by default footwear (5 sandal, 7 sneaker,
  9 ankle boot), as the paper forgets ImageNet's birds;
* the client's **personalization** data are ``n_orig`` original + ``n_shift`` domain-shifted
  images per personal class (the ImageNet-Sketch analog: a Sobel edge "sketch" by default),
  each domain split ``n_train_per_domain`` (12) train / rest (13) val, as in the paper. By
  default the personal classes are the tops (0 T-shirt, 2 pullover, 4 coat, 6 shirt): a
  semantic group like the paper's fish/marine/food classes, the most confusable Fashion-MNIST
  classes (so accuracy is not saturated and damage from masking shows), disjoint from the
  forget classes, leaving three **other** global classes (1 trouser, 3 dress, 8 bag) for the
  "accuracy on the other global classes" metric;
* the personal images are drawn from the training set and **held out of** ``global_train``:
  personalization is on data the provider never saw.

Everything is deterministic given ``seed`` (one ``numpy.random.Generator``).
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._errors import ArtifactError, DataNotFoundError, ShapeError, ZkapexError

__all__ = [
    "augment",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "DIGITS_CLASSES",
    "DEFAULT_FORGET_CLASSES",
    "DEFAULT_PERSONAL_CLASSES",
    "SHIFTS",
    "Split",
    "Splits",
    "load_fashion_mnist",
    "load_digits_28",
    "load_image_dataset",
    "to_float_images",
    "domain_shift",
    "make_splits",
    "class_names",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGITS_CLASSES = tuple(str(i) for i in range(10))
DEFAULT_FORGET_CLASSES = (5, 7, 9)  # footwear: sandal, sneaker, ankle boot
DEFAULT_PERSONAL_CLASSES = (0, 2, 4, 6)  # tops: T-shirt, pullover, coat, shirt
SHIFTS = ("edges", "invert", "rotate")

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set "
    "ZKAPEX_FMNIST_DIR to a directory holding the four *-ubyte(.gz) IDX files"
)


# ---------------------------------------------------------------------------------------------
# loaders


def _find_file(directory: str, stem: str) -> str | None:
    for name in (stem + ".gz", stem):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def _read_idx(path: str, *, kind: str) -> np.ndarray:
    """Read one IDX file (``kind`` "images": magic 2051, 3 dims; "labels": magic 2049, 1 dim)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArtifactError(f"{path}: cannot read ({exc}); the file is corrupt — reinstall the data set") from exc
    magic, ndim = (2051, 3) if kind == "images" else (2049, 1)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ArtifactError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    got_magic = struct.unpack(">i", raw[:4])[0]
    if got_magic != magic:
        raise ArtifactError(f"{path}: bad IDX magic number {got_magic}, expected {magic} ({kind})")
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    want = int(np.prod(dims))
    if len(raw) - header != want:
        raise ArtifactError(
            f"{path}: IDX header says {dims} = {want} bytes of data, file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _stamp(directory: str):
    """(name, size, mtime) of the files, so the cache notices a reinstall."""
    out = []
    for stem in _FILES.values():
        p = _find_file(directory, stem)
        if p is not None:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns))
    return tuple(out)


@functools.lru_cache(maxsize=2)
def _load_fmnist_cached(directory: str, stamp=()):
    del stamp  # part of the cache key only
    paths = {}
    missing = []
    for key, stem in _FILES.items():
        p = _find_file(directory, stem)
        if p is None:
            missing.append(stem + ".gz")
        paths[key] = p
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {directory!r} (missing {', '.join(missing)}): {_INSTALL_HINT}"
        )
    out = {}
    for key, p in paths.items():
        out[key] = _read_idx(p, kind="images" if key.startswith("x") else "labels")
    for split in ("train", "test"):
        x, y = out["x_" + split], out["y_" + split]
        if x.shape[1:] != (28, 28):
            raise ArtifactError(f"{paths['x_' + split]}: images are {x.shape[1:]}, expected 28×28")
        if x.shape[0] != y.shape[0]:
            raise ArtifactError(
                f"{paths['y_' + split]}: {y.shape[0]} labels for {x.shape[0]} images in {paths['x_' + split]}"
            )
        if y.size and int(y.max()) > 9:
            raise ArtifactError(f"{paths['y_' + split]}: label {int(y.max())} outside 0..9")
    return out["x_train"], out["y_train"].astype(np.int64), out["x_test"], out["y_test"].astype(np.int64)


def _resolve_dir(data_dir) -> str:
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get("ZKAPEX_FMNIST_DIR") or FASHION_MNIST_DIR


def load_fashion_mnist(data_dir=None):
    """Fashion-MNIST from the Debian package's IDX files.

    Looks in ``data_dir``, else ``$ZKAPEX_FMNIST_DIR``, else ``/usr/share/datasets/fashion-mnist``
    (``*-ubyte.gz`` or uncompressed ``*-ubyte``). Returns
    ``(x_train (60000, 28, 28) uint8, y_train (60000,) int64, x_test (10000, 28, 28) uint8,
    y_test (10000,) int64)`` (fresh copies).

    Raises ``DataNotFoundError`` (saying ``sudo apt-get install dataset-fashion-mnist``) when
    the files are absent, ``ArtifactError`` naming the file when one is corrupt."""
    directory = _resolve_dir(data_dir)
    directory = os.path.abspath(directory)
    xtr, ytr, xte, yte = _load_fmnist_cached(directory, _stamp(directory))
    return xtr.copy(), ytr.copy(), xte.copy(), yte.copy()


def _resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` float images to ``(N, size, size)`` (align-corners)."""
    n, h, w = x.shape
    ys = np.linspace(0.0, h - 1.0, size)
    xs = np.linspace(0.0, w - 1.0, size)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[None, :, None]
    wx = (xs - x0)[None, None, :]
    top = x[:, y0][:, :, x0] * (1 - wx) + x[:, y0][:, :, x1] * wx
    bot = x[:, y1][:, :, x0] * (1 - wx) + x[:, y1][:, :, x1] * wx
    return top * (1 - wy) + bot * wy


def load_digits_28(*, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's bundled digits (1797 8×8 images, 10 classes; no download) upsampled to
    24×24 (bilinear) and padded to 28×28 (a 2-pixel border, like MNIST), scaled to uint8 0..255.
    A stratified, seeded split: ``(x_train, y_train, x_test, y_test)`` like
    :func:`load_fashion_mnist`."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = d.images.astype(np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    big = _resize_bilinear(imgs, 24)
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    x = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(test_fraction * idx.size))])
    test_idx = np.sort(np.concatenate(test_idx))
    train_mask = np.ones(y.size, bool)
    train_mask[test_idx] = False
    return x[train_mask], y[train_mask], x[test_idx], y[test_idx]


def load_image_dataset(prefer: str = "fashion_mnist", *, data_dir=None, fallback: bool = True):
    """``(x_train, y_train, x_test, y_test, name)``: Fashion-MNIST when installed, else (with
    ``fallback=True``) scikit-learn's digits at 28×28, with a ``UserWarning`` and a ``name``
    that says so: ``"digits (fallback: Fashion-MNIST not found ...)"``.

    ``prefer``: ``"fashion_mnist"`` or ``"digits"`` (use the digits directly)."""
    if prefer == "digits":
        return (*load_digits_28(), "digits")
    if prefer != "fashion_mnist":
        raise ZkapexError(f"unknown image data set {prefer!r}; expected 'fashion_mnist' or 'digits'")
    try:
        return (*load_fashion_mnist(data_dir), "fashion_mnist")
    except DataNotFoundError as exc:
        if not fallback:
            raise
        msg = f"Fashion-MNIST not found ({exc}); falling back to scikit-learn's digits at 28×28"
        warnings.warn(msg, UserWarning, stacklevel=2)
        return (*load_digits_28(), f"digits (fallback: Fashion-MNIST not found in {_resolve_dir(data_dir)})")


def class_names(name: str) -> tuple[str, ...]:
    """Class names for a data set name returned by :func:`load_image_dataset`."""
    return FASHION_MNIST_CLASSES if name.startswith("fashion_mnist") else DIGITS_CLASSES


# ---------------------------------------------------------------------------------------------
# images and the domain shift


def to_float_images(x) -> np.ndarray:
    """uint8 ``(N, H, W)`` (or already float in [0, 1], with or without a channel axis) ->
    float32 NHWC ``(N, H, W, 1)`` in [0, 1]."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    else:
        x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ShapeError(f"images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    return x


def _sobel_magnitude(x: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of ``(N, H, W)`` float images (edge padding)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[1:]

    def s(dy, dx):
        return p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (s(-1, 1) + 2 * s(0, 1) + s(1, 1)) - (s(-1, -1) + 2 * s(0, -1) + s(1, -1))
    gy = (s(1, -1) + 2 * s(1, 0) + s(1, 1)) - (s(-1, -1) + 2 * s(-1, 0) + s(-1, 1))
    return np.sqrt(gx * gx + gy * gy)


def domain_shift(x, kind: str = "edges"):
    """The client's domain shift (the ImageNet-Sketch analog), image by image, deterministic.

    * ``"edges"`` (default): a pencil-sketch rendering — the Sobel edge magnitude, normalised
      per image to [0, 1], drawn as dark strokes on a white page (``1 - edges``). Like a
      sketch it keeps the outline and drops texture, fill and polarity.
    * ``"invert"``: ``1 - x`` (dark garment on a white background).
    * ``"rotate"``: rotated by 90° counter-clockwise.

    ``x``: uint8 (0..255) or float (in [0, 1]) images ``(N, H, W)`` or ``(N, H, W, 1)``; the result
    has the same shape and dtype."""
    if kind not in SHIFTS:
        raise ZkapexError(f"unknown domain shift {kind!r}; expected one of {SHIFTS}")
    x = np.asarray(x)
    is_u8 = x.dtype == np.uint8
    squeeze = False
    if x.ndim == 4:
        if x.shape[-1] != 1:
            raise ShapeError(f"domain_shift takes single-channel images, got shape {x.shape}")
        squeeze = True
        x = x[..., 0]
    if x.ndim != 3:
        raise ShapeError(f"images must be (N, H, W) or (N, H, W, 1), got shape {x.shape}")
    f = x.astype(np.float32) / np.float32(255.0) if is_u8 else x.astype(np.float32)
    if kind == "edges":
        mag = _sobel_magnitude(f)
        peak = mag.reshape(mag.shape[0], -1).max(axis=1)[:, None, None]
        out = 1.0 - mag / np.where(peak > 0, peak, 1.0)
    elif kind == "invert":
        out = 1.0 - f
    else:
        out = np.rot90(f, k=1, axes=(1, 2))
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if is_u8:
        out = np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    elif out.dtype != x.dtype:
        out = out.astype(x.dtype)
    return np.ascontiguousarray(out[..., None] if squeeze else out)


# ---------------------------------------------------------------------------------------------
# splits


def augment(x, y, *, copies: int, seed: int = 0, max_shift: int = 2):
    """``copies`` augmented versions of every image of ``x`` ``(N, H, W, C)`` (labels ``y`` kept):
    a random translation by up to ``max_shift`` pixels in each direction (zero fill) and a
    horizontal flip with probability ½, drawn with ``seed``. Returns ``(x', y')`` with
    ``copies·N`` examples, copy-major. What a client can compute on its own images when its model
    has memorized them (gradients at the training images vanish; at shifted ones less so)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
        raise ValueError(f"augment expects images (N, H, W, C), got shape {x.shape}")
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be a positive integer, got {copies!r}")
    rng = np.random.default_rng(seed)
    n, h, w, _ = x.shape
    out = np.zeros((copies * n,) + x.shape[1:], dtype=x.dtype)
    for c in range(copies):
        for i in range(n):
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
            img = x[i, :, ::-1] if rng.random() < 0.5 else x[i]
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            out[c * n + i, yd, xd] = img[ys, xs]
    return out, np.tile(y, copies)


class Split(NamedTuple):
    """Images ``x`` float32 NHWC ``(N, 28, 28, 1)`` in [0, 1] and labels ``y`` int32 ``(N,)``.
    A pytree: pass it as the batch ``(x, y)`` of a per-example loss."""

    x: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        """Number of examples (``len(split)`` is the tuple's 2)."""
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Splits:
    """The provider / client / forget splits (see the module docstring).

    Fields (each a :class:`Split`):
      global_train       training images of every class, minus the client's private images
      global_test        the whole test set
      forget_train       ``global_train`` restricted to the forget classes (provider's forget data)
      forget_test        test images of the forget classes
      retain_train       ``global_train`` without the forget classes (retrain gold standard)
      retain_test        test images of all classes but the forget classes
      personal_train     the client's training data: ``n_train_per_domain`` original +
                         ``n_train_per_domain`` shifted images per personal class
      personal_train_orig / personal_train_shift   the two halves of ``personal_train``
      personal_val_orig  the rest of the client's original images (13 per class by default)
      personal_val_shift the rest of the client's shifted images
      personal_test_orig test images of the personal classes (a larger, less noisy evaluation set)
      personal_test_shift the same test images, shifted
      other_test         test images of the classes neither forgotten nor personal (may be empty)
    ``info``: dataset name, classes, shift, seed, sizes and the indices (into the loader's
    train set) of the client's images.
    """

    global_train: Split
    global_test: Split
    forget_train: Split
    forget_test: Split
    retain_train: Split
    retain_test: Split
    personal_train: Split
    personal_train_orig: Split
    personal_train_shift: Split
    personal_val_orig: Split
    personal_val_shift: Split
    personal_test_orig: Split
    personal_test_shift: Split
    other_test: Split
    info: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """``{split name: number of examples}``."""
        return {k: getattr(self, k).n for k in self.__dataclass_fields__ if k != "info"}


def _split(x_u8, y, idx) -> Split:
    idx = np.asarray(idx, dtype=np.int64)
    return Split(to_float_images(x_u8[idx]) if idx.size else np.zeros((0, *x_u8.shape[1:], 1), np.float32),
                 np.asarray(y[idx], dtype=np.int32))


def _shifted(split: Split, shift: str) -> Split:
    if split.n == 0:
        return split
    return Split(domain_shift(split.x, shift), split.y)


def make_splits(
    x_tr,
    y_tr,
    x_te,
    y_te,
    *,
    seed: int = 0,
    forget_classes=DEFAULT_FORGET_CLASSES,
    personal_classes=DEFAULT_PERSONAL_CLASSES,
    n_orig: int = 25,
    n_shift: int = 25,
    n_train_per_domain: int = 12,
    shift: str = "edges",
    max_global_train: int | None = None,
    max_test: int | None = None,
    name: str = "fashion_mnist",
) -> Splits:
    """The paper's splits from a loader's ``(x_tr (N, 28, 28) uint8, y_tr, x_te, y_te)``.

    For each personal class, ``n_orig + n_shift`` distinct training images are drawn (seeded)
    and removed from ``global_train``; the first ``n_orig`` stay original, the other ``n_shift``
    get ``domain_shift(·, shift)``; in each domain the first ``n_train_per_domain`` are for
    training, the rest for validation. ``max_global_train`` / ``max_test`` subsample the global
    training / test sets (seeded, stratified-by-chance) for quick runs; ``None`` keeps all.

    Raises ``ZkapexError`` for overlapping or unknown classes, ``ShapeError`` for bad arrays or
    a class with too few images."""
    x_tr = np.asarray(x_tr)
    x_te = np.asarray(x_te)
    y_tr = np.asarray(y_tr).astype(np.int64)
    y_te = np.asarray(y_te).astype(np.int64)
    for nm, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ShapeError(f"{nm} images must be uint8 (N, H, W), got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],):
            raise ShapeError(f"{nm} labels must be ({x.shape[0]},), got {y.shape}")
    if shift not in SHIFTS:
        raise ZkapexError(f"unknown domain shift {shift!r}; expected one of {SHIFTS}")
    forget = tuple(int(c) for c in forget_classes)
    personal = tuple(int(c) for c in personal_classes)
    classes = sorted(set(np.unique(y_tr).tolist()))
    for c in forget + personal:
        if c not in classes:
            raise ZkapexError(f"class {c} does not occur in the training labels {classes}")
    if not forget or not personal:
        raise ZkapexError("forget_classes and personal_classes must both be non-empty")
    if set(forget) & set(personal):
        raise ZkapexError(f"forget classes {forget} and personal classes {personal} overlap")
    if not (0 < n_train_per_domain < min(n_orig, n_shift)):
        raise ZkapexError(
            f"n_train_per_domain={n_train_per_domain} must be positive and leave validation images "
            f"(n_orig={n_orig}, n_shift={n_shift})"
        )
    other = tuple(c for c in classes if c not in forget and c not in personal)

    rng = np.random.default_rng(seed)
    p_orig_tr, p_orig_va, p_shift_tr, p_shift_va = [], [], [], []
    held_out = []
    for c in personal:
        idx = np.flatnonzero(y_tr == c)
        need = n_orig + n_shift
        if idx.size < need:
            raise ShapeError(f"class {c} has {idx.size} training images, {need} needed for personalization")
        pick = rng.choice(idx, size=need, replace=False)
        orig, shf = pick[:n_orig], pick[n_orig:]
        p_orig_tr.append(orig[:n_train_per_domain])
        p_orig_va.append(orig[n_train_per_domain:])
        p_shift_tr.append(shf[:n_train_per_domain])
        p_shift_va.append(shf[n_train_per_domain:])
        held_out.append(pick)
    held = np.concatenate(held_out)

    keep = np.ones(y_tr.size, bool)
    keep[held] = False
    g_idx = np.flatnonzero(keep)
    if max_global_train is not None and max_global_train < g_idx.size:
        g_idx = np.sort(rng.choice(g_idx, size=max_global_train, replace=False))
    t_idx = np.arange(y_te.size)
    if max_test is not None and max_test < t_idx.size:
        t_idx = np.sort(rng.choice(t_idx, size=max_test, replace=False))

    in_forget_tr = np.isin(y_tr[g_idx], forget)
    in_forget_te = np.isin(y_te[t_idx], forget)
    in_pers_te = np.isin(y_te[t_idx], personal)
    in_other_te = np.isin(y_te[t_idx], other) if other else np.zeros(t_idx.size, bool)

    cat = np.concatenate
    po_tr, pr_tr = _split(x_tr, y_tr, cat(p_orig_tr)), _shifted(_split(x_tr, y_tr, cat(p_shift_tr)), shift)
    personal_train = Split(np.concatenate([po_tr.x, pr_tr.x]), np.concatenate([po_tr.y, pr_tr.y]))
    p_test = _split(x_te, y_te, t_idx[in_pers_te])
    info = {
        "dataset": name,
        "class_names": list(class_names(name)),
        "seed": int(seed),
        "forget_classes": list(forget),
        "personal_classes": list(personal),
        "other_classes": list(other),
        "shift": shift,
        "n_orig": n_orig,
        "n_shift": n_shift,
        "n_train_per_domain": n_train_per_domain,
        "layout": "NHWC float32 in [0, 1]",
        "personal_train_index": {"orig": cat(p_orig_tr).tolist(), "shift": cat(p_shift_tr).tolist()},
        "personal_val_index": {"orig": cat(p_orig_va).tolist(), "shift": cat(p_shift_va).tolist()},
    }
    return Splits(
        global_train=_split(x_tr, y_tr, g_idx),
        global_test=_split(x_te, y_te, t_idx),
        forget_train=_split(x_tr, y_tr, g_idx[in_forget_tr]),
        forget_test=_split(x_te, y_te, t_idx[in_forget_te]),
        retain_train=_split(x_tr, y_tr, g_idx[~in_forget_tr]),
        retain_test=_split(x_te, y_te, t_idx[~in_forget_te]),
        personal_train=personal_train,
        personal_train_orig=po_tr,
        personal_train_shift=pr_tr,
        personal_val_orig=_split(x_tr, y_tr, cat(p_orig_va)),
        personal_val_shift=_shifted(_split(x_tr, y_tr, cat(p_shift_va)), shift),
        personal_test_orig=p_test,
        personal_test_shift=_shifted(p_test, shift),
        other_test=_split(x_te, y_te, t_idx[in_other_te]),
        info=info,
    )
