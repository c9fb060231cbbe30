"""Data: IDX loader (against files written here), corrupt/missing files, digits fallback,
domain shifts (numpy oracles), the paper's splits (sizes, classes, disjointness, determinism)."""

import gzip
import os
import struct

import numpy as np
import pytest

from zkapex_jax.data import images as data
from zkapex_jax._errors import ArtifactError, DataNotFoundError, ShapeError, ZkapexError

FMNIST_INSTALLED = os.path.isfile(os.path.join(data.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))


def _write_idx(path, arr, *, magic=None, gz=True):
    arr = np.asarray(arr, np.uint8)
    magic = magic if magic is not None else (2051 if arr.ndim == 3 else 2049)
    raw = struct.pack(">i", magic) + struct.pack(f">{arr.ndim}i", *arr.shape) + arr.tobytes()
    with (gzip.open if gz else open)(path, "wb") as fh:
        fh.write(raw)


def _fake_dataset(directory, n_train=600, n_test=200, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ytr = np.tile(np.arange(10), n_train // 10).astype(np.uint8)
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yte = np.tile(np.arange(10), n_test // 10).astype(np.uint8)
    sfx = ".gz" if gz else ""
    _write_idx(directory / f"train-images-idx3-ubyte{sfx}", xtr, gz=gz)
    _write_idx(directory / f"train-labels-idx1-ubyte{sfx}", ytr, gz=gz)
    _write_idx(directory / f"t10k-images-idx3-ubyte{sfx}", xte, gz=gz)
    _write_idx(directory / f"t10k-labels-idx1-ubyte{sfx}", yte, gz=gz)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmnist")
    return d, _fake_dataset(d)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_exact_bytes(tmp_path, gz):
    want = _fake_dataset(tmp_path, gz=gz)
    got = data.load_fashion_mnist(tmp_path)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert got[0].dtype == np.uint8 and got[1].dtype == np.int64


def test_env_var_is_used(tmp_path, monkeypatch):
    want = _fake_dataset(tmp_path, n_train=100, n_test=50)
    monkeypatch.setenv("ZKAPEX_FMNIST_DIR", str(tmp_path))
    np.testing.assert_array_equal(data.load_fashion_mnist()[3], want[3])


def test_missing_dir_error_mentions_apt(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist") as ei:
        data.load_fashion_mnist(tmp_path / "absent")
    assert "ZKAPEX_FMNIST_DIR" in str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)


@pytest.mark.parametrize(
    "corruption, msg",
    [("magic", "magic number"), ("truncate", "bytes of data"), ("notgz", "corrupt"), ("count", "labels for")],
)
def test_corrupt_files_raise_artifact_error(tmp_path, corruption, msg):
    _fake_dataset(tmp_path, n_train=100, n_test=50)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    if corruption == "magic":
        _write_idx(p, np.zeros((100, 28, 28)), magic=2049)
    elif corruption == "truncate":
        raw = gzip.open(p).read()
        with gzip.open(p, "wb") as fh:
            fh.write(raw[:-10])
    elif corruption == "notgz":
        p.write_bytes(b"this is not gzip data at all")
    elif corruption == "count":
        _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(90))
    with pytest.raises(ArtifactError, match=msg) as ei:
        data.load_fashion_mnist(tmp_path)
    assert "ubyte" in str(ei.value)  # names the file


@pytest.mark.skipif(not FMNIST_INSTALLED, reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    xtr, ytr, xte, yte = data.load_fashion_mnist()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    *_, name = data.load_image_dataset()
    assert name == "fashion_mnist"


def test_fallback_to_digits(tmp_path):
    with pytest.warns(UserWarning, match="falling back"):
        xtr, ytr, xte, yte, name = data.load_image_dataset(data_dir=tmp_path / "absent")
    assert name.startswith("digits (fallback")
    assert xtr.shape[1:] == (28, 28) and xtr.dtype == np.uint8
    assert xtr.shape[0] + xte.shape[0] == 1797
    assert sorted(np.unique(ytr)) == list(range(10))
    assert xtr[:, :2].max() == 0 and xtr[:, :, -2:].max() == 0  # the 2-pixel border
    with pytest.raises(DataNotFoundError):
        data.load_image_dataset(data_dir=tmp_path / "absent", fallback=False)
    with pytest.raises(ZkapexError, match="unknown image data set"):
        data.load_image_dataset("cifar")


def test_digits_upsampling_matches_oracle():
    from sklearn.datasets import load_digits

    img = load_digits().images[:3] / 16.0
    out = data._resize_bilinear(img, 24)
    # align-corners bilinear: corners are the original corners, exact float64 oracle at a point
    np.testing.assert_allclose(out[:, 0, 0], img[:, 0, 0])
    np.testing.assert_allclose(out[:, -1, -1], img[:, -1, -1])
    r = c = 5  # source coordinate 5 * 7 / 23
    s = 5 * 7 / 23
    i, f = int(np.floor(s)), s - np.floor(s)
    want = ((1 - f) * ((1 - f) * img[:, i, i] + f * img[:, i, i + 1])
            + f * ((1 - f) * img[:, i + 1, i] + f * img[:, i + 1, i + 1]))
    np.testing.assert_allclose(out[:, r, c], want, rtol=1e-12)


def _sobel_oracle(img):
    """float64 loop oracle of the Sobel magnitude with edge padding."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)
    ky = kx.T
    p = np.pad(img.astype(np.float64), 1, mode="edge")
    h, w = img.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            win = p[i : i + 3, j : j + 3]
            out[i, j] = np.hypot((win * kx).sum(), (win * ky).sum())
    return out


def test_domain_shift_edges_oracle():
    rng = np.random.default_rng(0)
    x = rng.random((2, 28, 28, 1)).astype(np.float32)
    got = data.domain_shift(x, "edges")
    assert got.shape == x.shape and got.dtype == np.float32
    for k in range(2):
        mag = _sobel_oracle(x[k, ..., 0])
        np.testing.assert_allclose(got[k, ..., 0], 1.0 - mag / mag.max(), atol=1e-5)
    flat = data.domain_shift(np.zeros((1, 28, 28), np.uint8))  # a blank image: a blank page
    assert flat.dtype == np.uint8 and flat.min() == 255


@pytest.mark.parametrize("kind", data.SHIFTS)
def test_domain_shift_kinds(kind):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    got = data.domain_shift(x, kind)
    assert got.shape == x.shape and got.dtype == np.uint8
    if kind == "invert":
        np.testing.assert_array_equal(got, 255 - x)
    if kind == "rotate":
        np.testing.assert_array_equal(got[0], np.rot90(x[0]))
    assert not np.array_equal(got, x)
    with pytest.raises(ZkapexError, match="unknown domain shift"):
        data.domain_shift(x, "blur")
    with pytest.raises(ShapeError):
        data.domain_shift(np.zeros((2, 28, 28, 3), np.float32), kind)


def test_to_float_images():
    x = np.array([[[0, 255]]], np.uint8)
    f = data.to_float_images(x)
    assert f.shape == (1, 1, 2, 1) and f.dtype == np.float32
    np.testing.assert_array_equal(f[0, 0, :, 0], [0.0, 1.0])


@pytest.fixture(scope="module")
def splits(fake):
    d, arrays = fake
    return arrays, data.make_splits(*arrays, seed=7, n_orig=6, n_shift=5, n_train_per_domain=3)


def test_splits_sizes_and_classes(splits):
    (xtr, ytr, xte, yte), s = splits
    P, F = data.DEFAULT_PERSONAL_CLASSES, data.DEFAULT_FORGET_CLASSES
    sz = s.sizes()
    assert sz["personal_train"] == len(P) * 6
    assert sz["personal_val_orig"] == len(P) * 3 and sz["personal_val_shift"] == len(P) * 2
    assert sz["global_train"] == 600 - len(P) * 11
    assert sz["global_test"] == 200
    assert set(np.unique(s.forget_train.y)) == set(F) == set(np.unique(s.forget_test.y))
    assert not set(np.unique(s.retain_train.y)) & set(F)
    assert set(np.unique(s.global_train.y)) == set(range(10))
    assert set(np.unique(s.personal_train.y)) == set(P)
    assert set(np.unique(s.other_test.y)) == {1, 3, 8}
    assert sz["forget_train"] + sz["retain_train"] == sz["global_train"]
    assert sz["forget_test"] + sz["retain_test"] == 200
    for name in sz:
        sp = getattr(s, name)
        assert sp.x.dtype == np.float32 and sp.y.dtype == np.int32
        assert sp.x.shape == (sp.n, 28, 28, 1)
        assert sp.x.min() >= 0.0 and sp.x.max() <= 1.0
    np.testing.assert_array_equal(s.personal_train.x[: len(P) * 3], s.personal_train_orig.x)
    np.testing.assert_array_equal(s.personal_train.x[len(P) * 3 :], s.personal_train_shift.x)


def _row_set(x):
    return {r.tobytes() for r in np.asarray(x).reshape(len(x), -1)}


def test_personal_images_are_held_out_and_disjoint(splits):
    (xtr, ytr, xte, yte), s = splits
    idx = s.info["personal_train_index"]["orig"] + s.info["personal_train_index"]["shift"]
    idx += s.info["personal_val_index"]["orig"] + s.info["personal_val_index"]["shift"]
    assert len(idx) == len(set(idx))  # no image in two client splits
    g = _row_set(s.global_train.x)
    client_raw = data.to_float_images(xtr[np.array(idx)])
    assert not (_row_set(client_raw) & g)  # private data never in the provider's training set
    # the shifted images are the shifted versions of the recorded originals
    np.testing.assert_array_equal(
        s.personal_val_shift.x, data.domain_shift(data.to_float_images(xtr[s.info["personal_val_index"]["shift"]]))
    )
    np.testing.assert_array_equal(s.personal_test_shift.x, data.domain_shift(s.personal_test_orig.x))


def test_splits_deterministic_in_seed(fake):
    _, arrays = fake
    kw = dict(n_orig=6, n_shift=5, n_train_per_domain=3)
    a = data.make_splits(*arrays, seed=1, **kw)
    b = data.make_splits(*arrays, seed=1, **kw)
    c = data.make_splits(*arrays, seed=2, **kw)
    for name in a.sizes():
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
        np.testing.assert_array_equal(getattr(a, name).y, getattr(b, name).y)
    assert a.info["personal_train_index"] != c.info["personal_train_index"]


def test_splits_subsample_and_custom_classes(fake):
    _, arrays = fake
    s = data.make_splits(*arrays, seed=0, forget_classes=(0,), personal_classes=(1, 2), n_orig=4, n_shift=4,
                         n_train_per_domain=2, shift="invert", max_global_train=100, max_test=50)
    assert s.global_train.n == 100 and s.global_test.n == 50
    assert set(np.unique(s.forget_test.y)) <= {0}
    assert set(s.info["other_classes"]) == set(range(3, 10))
    np.testing.assert_allclose(s.personal_train_shift.x + 0, 1.0 - data.to_float_images(
        arrays[0][s.info["personal_train_index"]["shift"]]), atol=1e-6)


@pytest.mark.parametrize(
    "kw, err, msg",
    [
        (dict(forget_classes=(0, 5), personal_classes=(0,)), ZkapexError, "overlap"),
        (dict(forget_classes=(11,)), ZkapexError, "does not occur"),
        (dict(n_orig=5, n_shift=5, n_train_per_domain=5), ZkapexError, "validation"),
        (dict(n_orig=40, n_shift=40), ShapeError, "training images"),
        (dict(shift="blur"), ZkapexError, "unknown domain shift"),
    ],
)
def test_split_errors(fake, kw, err, msg):
    _, arrays = fake
    with pytest.raises(err, match=msg):
        data.make_splits(*arrays, seed=0, **kw)


def test_splits_on_digits_fallback():
    xtr, ytr, xte, yte, name = data.load_image_dataset("digits")
    s = data.make_splits(xtr, ytr, xte, yte, seed=0, name=name)
    assert s.personal_train.n == 4 * 24 and s.personal_val_shift.n == 4 * 13
    assert s.info["class_names"][5] == "5"


def test_augment_shifts_and_flips_every_image_within_bounds():
    """``augment``: copies·N images, labels tiled copy-major, each a translation by at most
    ``max_shift`` pixels (zero fill) of the image or of its mirror; the same seed gives the same
    copies; bad shapes and counts are refused."""
    from zkapex_jax.data import augment

    x = np.zeros((3, 9, 9, 1), np.float32)
    for i, (r, c) in enumerate([(4, 4), (2, 6), (6, 3)]):
        x[i, r, c, 0] = 1.0 + i          # one marked pixel per image
    y = np.array([7, 1, 4], np.int32)
    a, b = augment(x, y, copies=4, seed=3, max_shift=2)
    assert a.shape == (12, 9, 9, 1) and b.tolist() == [7, 1, 4] * 4
    for j in range(12):
        i = j % 3
        (r0, c0), = np.argwhere(x[i, :, :, 0] > 0)
        (r, c), = np.argwhere(a[j, :, :, 0] > 0)       # the marked pixel survives (it is ≥ 2 from every edge)
        assert a[j, r, c, 0] == x[i, r0, c0, 0] and np.count_nonzero(a[j]) == 1
        assert abs(r - r0) <= 2 and min(abs(c - c0), abs(c - (8 - c0))) <= 2
    a2, _ = augment(x, y, copies=4, seed=3, max_shift=2)
    assert np.array_equal(a, a2) and not np.array_equal(a, augment(x, y, copies=4, seed=4, max_shift=2)[0])
    with pytest.raises(ValueError, match="copies"):
        augment(x, y, copies=0)
    with pytest.raises(ValueError, match="images"):
        augment(x[:, :, :, 0], y, copies=1)
