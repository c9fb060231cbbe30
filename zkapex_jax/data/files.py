"""Bring-your-own data for the CLI and the library: labelled images (an ``.npz`` or an image
folder) for a classifier, text/code files for a causal LM.

* ``.npz`` with ``x`` ``(N, H, W)`` or ``(N, H, W, C)`` (uint8 0..255, or float in [0, 1]) and
  ``y`` ``(N,)`` integer labels;
* a folder with one sub-folder per class holding PNG/JPEG/BMP/GIF images (read with Pillow,
  converted to the model's channels and resized to its input size). Sub-folders named by
  integers (``0/``, ``7/``) are those labels; otherwise classes are the sorted folder names
  numbered from 0 (the mapping is returned).

* for an LM: a text/code file or a folder of them, tokenized with the provider's tokenizer and cut
  into sequences (:func:`load_token_sequences`).

Everything is validated against the model's input ``(H, W, C)`` and number of labels, with an
error (:class:`~zkapex_jax._errors.ZkapexError`) naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._errors import ZkapexError
from .images import Split

__all__ = ["load_labelled", "load_token_sequences", "select_classes", "parse_classes", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
MAX_IMAGES = 1_000_000
MAX_NPZ_BYTES = 8 << 30


def parse_classes(text: str, num_labels: int) -> tuple[int, ...]:
    """``"5,7,9"`` -> ``(5, 7, 9)``, each in ``[0, num_labels)``, no duplicates."""
    try:
        vals = tuple(int(t, 10) for t in text.split(",") if t.strip())
    except ValueError:
        raise ZkapexError(f"classes must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise ZkapexError("no classes given")
    bad = [v for v in vals if not 0 <= v < num_labels]
    if bad:
        raise ZkapexError(f"classes {bad} are outside [0, {num_labels})")
    if len(set(vals)) != len(vals):
        raise ZkapexError(f"duplicate classes in {text!r}")
    return vals


def select_classes(split: Split, classes, *, keep: bool = True) -> Split:
    """The examples whose label is (``keep=True``) or is not in ``classes``."""
    sel = np.isin(split.y, np.asarray(list(classes)))
    sel = sel if keep else ~sel
    return Split(split.x[sel], split.y[sel])


def _to_float_images(x: np.ndarray, where: str, shape: tuple[int, int, int]) -> np.ndarray:
    h, w, c = shape
    if x.ndim == 3 and c == 1:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (h, w, c):
        raise ZkapexError(f"{where}: x has shape {x.shape}; the model needs (N, {h}, {w}, {c})"
                          + (" or (N, H, W) for one channel" if c == 1 else ""))
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype.kind != "f":
        raise ZkapexError(f"{where}: x must be uint8 (0..255) or float in [0, 1], got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ZkapexError(f"{where}: x holds NaN or infinite values")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ZkapexError(f"{where}: float images must lie in [0, 1] (got [{x.min():.3g}, {x.max():.3g}])")
    return x


def _check_labels(y: np.ndarray, where: str, num_labels: int) -> np.ndarray:
    if y.ndim != 1:
        raise ZkapexError(f"{where}: y must be (N,), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise ZkapexError(f"{where}: y must hold integer labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_labels):
        raise ZkapexError(f"{where}: labels must be in [0, {num_labels}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int32)


def _load_npz(path: Path, shape, num_labels) -> Split:
    from .._io import open_regular_file

    try:
        with open_regular_file(path, max_bytes=MAX_NPZ_BYTES, what="data file") as f, \
                np.load(f, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise ZkapexError(f"{path}: missing array(s) {missing} (expected 'x' images and 'y' labels)")
            x, y = z["x"], z["y"]
    except ZkapexError:
        raise
    except (OSError, ValueError) as e:  # zip errors are ValueError/BadZipFile(Exception)
        raise ZkapexError(f"{path}: not a readable .npz ({e})") from None
    except Exception as e:  # noqa: BLE001 - zipfile.BadZipFile and friends
        raise ZkapexError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    if x.shape[:1] != y.shape[:1]:
        raise ZkapexError(f"{path}: x has {x.shape[0] if x.ndim else 0} examples but y has {y.shape[0] if y.ndim else 0}")
    return Split(_to_float_images(x, str(path), shape), _check_labels(y, str(path), num_labels))


def _load_folder(path: Path, shape, num_labels) -> tuple[Split, dict[str, int]]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover - Pillow is a dependency
        raise ZkapexError("reading an image folder needs Pillow (pip install pillow)") from e
    h, w, c = shape
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise ZkapexError(f"{path}: no class sub-folders (expected one folder of images per class)")
    names = [p.name for p in subdirs]
    if all(n.isdigit() for n in names):
        mapping = {n: int(n) for n in names}
    else:
        mapping = {n: i for i, n in enumerate(names)}
    bad = {n: v for n, v in mapping.items() if not 0 <= v < num_labels}
    if bad:
        raise ZkapexError(f"{path}: class folders {sorted(bad)} map to labels outside [0, {num_labels})")
    xs, ys = [], []
    for d in subdirs:
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            if len(xs) >= MAX_IMAGES:
                raise ZkapexError(f"{path}: more than {MAX_IMAGES} images")
            if not f.is_file():
                raise ZkapexError(f"{f}: not a regular file")
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if c == 1 else "RGB")
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ZkapexError(f"{f}: not a readable image ({e})") from None
            xs.append(a.reshape(h, w, c))
            ys.append(mapping[d.name])
    if not xs:
        raise ZkapexError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    x = np.stack(xs).astype(np.float32) / np.float32(255.0)
    return Split(x, np.asarray(ys, np.int32)), mapping


def load_labelled(path, *, image_shape: tuple[int, int, int], num_labels: int, min_examples: int = 1):
    """Labelled images from an ``.npz`` or an image folder (see the module docstring).

    Args:
      path: the ``.npz`` file or the folder.
      image_shape: the model's input ``(H, W, C)``.
      num_labels: labels must lie in ``[0, num_labels)``.
      min_examples: fewer examples is an error.

    Returns:
      ``(Split(x (N,H,W,C) float32 in [0,1], y (N,) int32), class_map)`` where ``class_map`` is
      the folder-name -> label mapping (``None`` for an ``.npz``).
    """
    p = Path(os.fspath(path))
    if "\x00" in str(p):
        raise ZkapexError(f"data path {str(p)!r} contains a NUL byte")
    if not p.exists():
        raise ZkapexError(f"{p}: data not found (give an .npz with 'x' and 'y', or a folder of class folders)")
    if p.is_dir():
        split, mapping = _load_folder(p, image_shape, num_labels)
    elif p.suffix.lower() == ".npz":
        split, mapping = _load_npz(p, image_shape, num_labels), None
    else:
        raise ZkapexError(f"{p}: unsupported data (an .npz with 'x' and 'y', or a folder of class folders)")
    if split.n < min_examples:
        raise ZkapexError(f"{p}: {split.n} examples; at least {min_examples} needed")
    return split, mapping


MAX_TEXT_FILES = 100_000
MAX_TEXT_BYTES = 1 << 30


def load_token_sequences(path, tokenizer, seq_len: int, *, min_sequences: int = 1) -> np.ndarray:
    """A causal LM's data from a text/code file or a folder of them (searched recursively, in
    sorted order): every regular file that decodes as UTF-8 and holds no NUL byte is tokenized,
    followed by end-of-text, and the stream is cut into ``(n, seq_len)`` int32 rows. Other files
    (binaries, links, special files) are skipped; caps: 100,000 files, 1 GiB of text.

    Raises ``ZkapexError`` naming the path when nothing usable is found or there are fewer than
    ``min_sequences`` rows."""
    from .._io import read_regular_file
    from .code import chunk_tokens, encode_split

    p = Path(os.fspath(path))
    if "\x00" in str(p):
        raise ZkapexError(f"data path {str(p)!r} contains a NUL byte")
    if not p.exists():
        raise ZkapexError(f"{p}: data not found (give a text/code file or a folder of them)")
    if int(seq_len) < 2:
        raise ZkapexError(f"sequence length must be >= 2, got {seq_len}")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    if len(files) > MAX_TEXT_FILES:
        raise ZkapexError(f"{p}: {len(files)} files, more than {MAX_TEXT_FILES}")
    texts, total = [], 0
    for f in files:
        if total >= MAX_TEXT_BYTES:
            raise ZkapexError(f"{p}: more than {MAX_TEXT_BYTES >> 30} GiB of text")
        try:
            raw = read_regular_file(f, max_bytes=MAX_TEXT_BYTES - total)
        except (OSError, ValueError):
            continue
        if b"\x00" in raw:
            continue
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue
        total += len(raw)
    if not texts:
        raise ZkapexError(f"{p}: no UTF-8 text files")
    rows = chunk_tokens(encode_split(tokenizer, texts), int(seq_len))
    if rows.shape[0] < min_sequences:
        raise ZkapexError(f"{p}: {rows.shape[0]} sequences of {seq_len} tokens from {len(texts)} files; "
                          f"at least {min_sequences} needed")
    return rows
