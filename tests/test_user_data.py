"""Bring-your-own data: .npz and image folders, validated; the CLI from a global checkpoint to a
mask, a personalized model and a Fisher on the user's own files."""

from __future__ import annotations

import numpy as np
import pytest

from zkapex_jax import cli
from zkapex_jax._errors import ZkapexError
from zkapex_jax.models import build_model
from zkapex_jax.train import save_checkpoint
from zkapex_jax.user_data import load_labelled, parse_classes, select_classes

SHAPE = (28, 28, 1)


def make_folder(root, classes=("0", "3", "7"), per_class=4, size=(28, 28), mode="L", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, size=size[::-1] + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
            Image.fromarray(a, mode).save(root / c / f"img{i}.png")
    return root


def test_npz_roundtrip_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 4, 9])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    split, mapping = load_labelled(tmp_path / "d.npz", image_shape=SHAPE, num_labels=10)
    assert mapping is None and split.x.shape == (6, 28, 28, 1) and split.x.dtype == np.float32
    np.testing.assert_allclose(split.x[..., 0], x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(split.y, y)
    bad = {
        "labels": dict(x=x, y=np.array([0, 1, 2, 3, 4, 10])),
        "count": dict(x=x, y=y[:5]),
        "shape": dict(x=x[:, :20], y=y),
        "range": dict(x=x.astype(np.float32), y=y),  # floats must be in [0, 1]
        "nan": dict(x=np.full((6, 28, 28), np.nan, np.float32), y=y),
        "ydtype": dict(x=x, y=y.astype(np.float32)),
        "missing": dict(images=x, y=y),
    }
    for name, arrs in bad.items():
        np.savez(tmp_path / f"{name}.npz", **arrs)
        with pytest.raises(ZkapexError, match=f"{name}.npz"):
            load_labelled(tmp_path / f"{name}.npz", image_shape=SHAPE, num_labels=10)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ZkapexError, match="not a readable"):
        load_labelled(tmp_path / "junk.npz", image_shape=SHAPE, num_labels=10)
    with pytest.raises(ZkapexError, match="not found"):
        load_labelled(tmp_path / "nope.npz", image_shape=SHAPE, num_labels=10)


def test_image_folder(tmp_path):
    make_folder(tmp_path / "num", size=(32, 30), mode="RGB")  # resized and converted to grey
    split, mapping = load_labelled(tmp_path / "num", image_shape=SHAPE, num_labels=10)
    assert mapping == {"0": 0, "3": 3, "7": 7}
    assert split.x.shape == (12, 28, 28, 1) and 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert sorted(set(split.y.tolist())) == [0, 3, 7]
    make_folder(tmp_path / "named", classes=("cat", "dog"))
    split, mapping = load_labelled(tmp_path / "named", image_shape=SHAPE, num_labels=10)
    assert mapping == {"cat": 0, "dog": 1}
    make_folder(tmp_path / "big", classes=("12",))
    with pytest.raises(ZkapexError, match="outside"):
        load_labelled(tmp_path / "big", image_shape=SHAPE, num_labels=10)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ZkapexError, match="no images"):
        load_labelled(tmp_path / "empty", image_shape=SHAPE, num_labels=10)
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ZkapexError, match="x.png"):
        load_labelled(tmp_path / "broken", image_shape=SHAPE, num_labels=10)
    assert parse_classes("5, 7,9", 10) == (5, 7, 9)
    for bad in ("", "a", "10", "1,1"):
        with pytest.raises(ZkapexError):
            parse_classes(bad, 10)
    s = select_classes(split, [1])
    assert set(s.y.tolist()) == {1}


def test_cli_on_own_folder(tmp_path, capsys, monkeypatch):
    """The README quickstart's first half on a folder the test creates: personalize on the
    client's folder, the provider's mask from its folder and forget classes, the client's Fisher."""
    monkeypatch.setenv("ZKAPEX_CACHE", str(tmp_path / "cache"))
    _, params = build_model("vit-test", seed=0)
    save_checkpoint(tmp_path / "global", params)
    make_folder(tmp_path / "client", classes=("0", "2", "6"), per_class=3, seed=1)
    make_folder(tmp_path / "provider", classes=("0", "2", "5", "7", "9"), per_class=3, seed=2)
    m = ["--model", "vit-test"]
    assert cli.main(["personalize", "--global", str(tmp_path / "global"), "--data", str(tmp_path / "client"),
                     "--out", str(tmp_path / "pers"), "--epochs", "1", *m]) == 0
    assert "personalized: 9 images" in capsys.readouterr().out
    # the same output again: refused without --force, the checkpoint untouched
    before = (tmp_path / "pers" / "meta.json").read_bytes()
    assert cli.main(["personalize", "--global", str(tmp_path / "global"), "--data", str(tmp_path / "client"),
                     "--out", str(tmp_path / "pers"), "--epochs", "1", *m]) == 2
    assert (tmp_path / "pers" / "meta.json").read_bytes() == before
    pattern = "*/layer/0/intermediate/dense/kernel"
    assert cli.main(["mask", "--global", str(tmp_path / "global"), "--data", str(tmp_path / "provider"),
                     "--forget-classes", "5,7,9", "--out", str(tmp_path / "mask.json"), "--pattern", pattern,
                     "--block-size", "16", *m]) == 0
    from zkapex_jax.mask import Mask

    mk = Mask.load(tmp_path / "mask.json")
    assert mk.num_masked > 0 and mk.paths and all("intermediate" in p for p in mk.paths)
    assert cli.main(["fisher", "--params", str(tmp_path / "pers"), "--data", str(tmp_path / "client"),
                     "--out", str(tmp_path / "fisher.npz"), "--pattern", pattern, "--block-size", "16", *m]) == 0
    f, layout = cli.load_fisher(tmp_path / "fisher.npz")
    assert f.shape == (layout.num_blocks, 16, 16) and np.isfinite(f).all()
    capsys.readouterr()
    # bad data choices: exit 2 with a message, nothing written
    for argv in (["mask", "--global", str(tmp_path / "global"), "--data", str(tmp_path / "provider"),
                  "--out", str(tmp_path / "m2.json"), *m],  # no --forget-classes
                 ["mask", "--global", str(tmp_path / "global"), "--data", str(tmp_path / "provider"),
                  "--forget-classes", "0,2,5,7,9", "--out", str(tmp_path / "m2.json"), *m],  # nothing retained
                 ["mask", "--global", str(tmp_path / "global"), "--data", str(tmp_path / "provider"),
                  "--forget-classes", "11", "--out", str(tmp_path / "m2.json"), *m],
                 ["fisher", "--params", str(tmp_path / "pers"), "--data", str(tmp_path / "nowhere"),
                  "--out", str(tmp_path / "f2.npz"), *m]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "m2.json").exists() and not (tmp_path / "f2.npz").exists()
