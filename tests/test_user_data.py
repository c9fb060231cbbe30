"""Bring-your-own data: .npz and image folders, validated; the CLI from a global checkpoint to a
mask, a personalized model and a Fisher on the user's own files."""

from __future__ import annotations

import numpy as np
import pytest

from zkapex_jax import cli
from zkapex_jax.protocol.api import Curvature
from zkapex_jax._errors import ZkapexError
from zkapex_jax.models.train import save_checkpoint
from zkapex_jax.data.files import load_labelled, parse_classes, select_classes

from conftest import build_model_cached

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


def test_cli_on_own_folder(tmp_path, capsys):
    """The README quickstart's first half on a folder the test creates: personalize on the
    client's folder, the provider's mask from its folder and forget classes, the client's Fisher."""
    _, params = build_model_cached("vit-test", seed=0)
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
    from zkapex_jax.core.mask import Mask

    mk = Mask.load(tmp_path / "mask.json")
    assert mk.num_masked > 0 and mk.paths and all("intermediate" in p for p in mk.paths)
    assert mk.meta["forget_classes"] == [5, 7, 9] and mk.meta["data"] == "provider"  # what the user named
    assert cli.main(["fisher", "--params", str(tmp_path / "pers"), "--data", str(tmp_path / "client"),
                     "--out", str(tmp_path / "fisher.npz"), "--pattern", pattern, "--block-size", "16", *m]) == 0
    _c = Curvature.load(tmp_path / "fisher.npz")
    f, layout = _c.fisher, _c.layout
    assert f.shape == (layout.num_blocks, 16, 16) and np.isfinite(f).all()
    # another curvature family (the masked layer's input second moment), relative damping
    assert cli.main(["fisher", "--params", str(tmp_path / "pers"), "--data", str(tmp_path / "client"),
                     "--out", str(tmp_path / "xx.npz"), "--pattern", pattern, "--block-size", "16",
                     "--curvature", "layer_inputs", "--damping", "1e-2", "--relative-damping", *m]) == 0
    assert "curvature (layer_inputs)" in capsys.readouterr().out
    cx = Curvature.load(tmp_path / "xx.npz")
    fx = cx.fisher
    assert (cx.kind, cx.relative) == ("layer_inputs", True) and abs(cx.damping - 1e-2) < 1e-12
    # the empirical Fisher on augmented copies of the client's images: 3 per image
    assert cli.main(["fisher", "--params", str(tmp_path / "pers"), "--data", str(tmp_path / "client"),
                     "--out", str(tmp_path / "aug.npz"), "--pattern", pattern, "--block-size", "16",
                     "--augment", "3", *m]) == 0
    import re

    n_aug = int(re.search(r"from (\d+) examples", capsys.readouterr().out).group(1))
    assert Curvature.load(tmp_path / "aug.npz").fisher.shape == f.shape and n_aug % 3 == 0 and n_aug > 0
    assert fx.shape == f.shape and np.linalg.eigvalsh(fx).min() > 0 and not np.allclose(fx, f, rtol=0.1)
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


def _code_folder(root, lang, n_files=3, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    words = {"rust": ["fn", "let", "mut", "impl", "match", "Some", "None", "->", "{", "}", ";"],
             "java": ["public", "class", "void", "static", "new", "return", "(", ")", "{", "}", ";"]}[lang]
    for i in range(n_files):
        (root / f"f{i}.txt").write_text(" ".join(rng.choice(words, 300)) + "\n")
    (root / "blob.bin").write_bytes(b"\x00\xff" * 50)  # a binary file is skipped, not an error
    return root


def test_text_folders_for_a_language_model(tmp_path, capsys):
    """A provider and a client with an LM: personalize, mask and Fisher on text/code folders."""
    from zkapex_jax.core.mask import Mask
    from zkapex_jax.data.code import train_bpe_tokenizer
    from zkapex_jax.data.files import load_token_sequences
    from zkapex_jax.models import family

    rust = _code_folder(tmp_path / "rust", "rust")
    java = _code_folder(tmp_path / "java", "java", seed=1)
    tok = train_bpe_tokenizer([p.read_text() for d in (rust, java) for p in sorted(d.glob("*.txt"))], 300,
                              use_cache=False)
    tok.save(tmp_path / "tok.json")
    rows = load_token_sequences(rust, tok, 16)
    assert rows.ndim == 2 and rows.shape[1] == 16 and rows.shape[0] >= 4 and rows.max() < tok.vocab_size
    with pytest.raises(ZkapexError, match="no UTF-8 text"):
        load_token_sequences(tmp_path / "rust" / "blob.bin", tok, 16)
    with pytest.raises(ZkapexError, match="at least 10000"):
        load_token_sequences(rust, tok, 16, min_sequences=10000)

    fam = family("opt-test", vocab_size=tok.vocab_size)
    save_checkpoint(tmp_path / "global", fam.init(0))
    lm = ["--model", "opt-test", "--tokenizer", str(tmp_path / "tok.json"), "--seq-len", "16", "--block-size", "16"]
    assert cli.main(["personalize", "--global", str(tmp_path / "global"), "--data", str(rust),
                     "--out", str(tmp_path / "pers"), "--epochs", "1", *lm]) == 0
    assert "sequences of 16 tokens" in capsys.readouterr().out
    assert cli.main(["mask", "--global", str(tmp_path / "global"), "--forget", str(java), "--retain", str(rust),
                     "--out", str(tmp_path / "mask.json"), "--fraction", "0.1", *lm]) == 0
    mk = Mask.load(tmp_path / "mask.json")
    assert mk.num_masked > 0 and all(p.endswith("fc1/kernel") for p in mk.paths)
    assert mk.meta["forget_data"] == "java" and mk.meta["retain_data"] == "rust"
    assert cli.main(["fisher", "--params", str(tmp_path / "pers"), "--data", str(rust),
                     "--out", str(tmp_path / "fisher.npz"), *lm]) == 0
    _c = Curvature.load(tmp_path / "fisher.npz")
    f, layout = _c.fisher, _c.layout
    assert f.shape == (layout.num_blocks, 16, 16) and np.isfinite(f).all()
    capsys.readouterr()
    # label-sampling curvatures need a classifier: exit 2 with the reason, nothing written
    assert cli.main(["fisher", "--params", str(tmp_path / "pers"), "--data", str(rust),
                     "--out", str(tmp_path / "f-true.npz"), "--curvature", "exact", *lm]) == 2
    assert "needs a classifier" in capsys.readouterr().err and not (tmp_path / "f-true.npz").exists()
    # an LM without its tokenizer, a class list for text, too long sequences: exit 2, nothing written
    for argv, words in (
        (["fisher", "--params", str(tmp_path / "pers"), "--data", str(rust), "--out", str(tmp_path / "x.npz"),
          "--model", "opt-test"], "--tokenizer"),
        (["mask", "--global", str(tmp_path / "global"), "--data", str(rust), "--forget-classes", "1",
          "--out", str(tmp_path / "x.json"), *lm], "--forget and --retain"),
        (["fisher", "--params", str(tmp_path / "pers"), "--data", str(rust), "--out", str(tmp_path / "x.npz"),
          *lm[:-4], "--seq-len", "4096"], "positions"),
        (["fisher", "--params", str(tmp_path / "pers"), "--out", str(tmp_path / "x.npz"), *lm], "give --data"),
        (["fisher", "--params", str(tmp_path / "pers"), "--data", str(rust), "--out", str(tmp_path / "x.npz"),
          "--augment", "2", *lm], "image classifiers"),
        (["fisher", "--params", str(tmp_path / "pers"), "--data", str(rust), "--out", str(tmp_path / "x.npz"),
          "--model", str(tmp_path / "nomodel")], "neither a built-in"),
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "x.json").exists()


def test_a_local_hugging_face_directory_as_the_model(tmp_path, capsys):
    """--model and --params may name a Hugging Face model directory (config.json + weights)."""
    model, params = build_model_cached("vit-test", seed=3)
    model.save_pretrained(tmp_path / "hf", params=params)
    assert (tmp_path / "hf" / "config.json").exists()
    make_folder(tmp_path / "client", classes=("0", "2"), per_class=3)
    assert cli.main(["fisher", "--model", str(tmp_path / "hf"), "--params", str(tmp_path / "hf"),
                     "--data", str(tmp_path / "client"), "--out", str(tmp_path / "fisher.npz"),
                     "--block-size", "16"]) == 0
    _c = Curvature.load(tmp_path / "fisher.npz")
    f, layout = _c.fisher, _c.layout
    assert layout.num_blocks == 2 * 16 * 32 // 16 and np.isfinite(f).all()
    # the HF directory's parameters are the ones used: the same Fisher as from the built-in model
    from zkapex_jax import family
    from zkapex_jax.protocol import client
    from zkapex_jax.data.files import load_labelled

    split, _ = load_labelled(tmp_path / "client", image_shape=(28, 28, 1), num_labels=10)
    want = client.client_fisher(family("vit-test"), params, (split.x, split.y), layout, damping=1e-6)
    np.testing.assert_allclose(f, np.asarray(want), rtol=1e-4, atol=1e-7)


def test_train_verb_on_own_folder(tmp_path, capsys):
    """`zkapex train`: the provider's global model from the user's folder, written as a checkpoint
    the other verbs take; refused without data for a model with none built in, and over an
    existing output."""
    make_folder(tmp_path / "provider", classes=("0", "2", "5"), per_class=3, seed=2)
    m = ["--model", "vit-test"]
    assert cli.main(["train", "--data", str(tmp_path / "provider"), "--out", str(tmp_path / "g"), "--epochs", "1",
                     "--batch", "4", *m]) == 0
    out = capsys.readouterr().out
    assert "training data: 9 images of 3 classes" in out and "global model: 9 images, 1 epochs" in out
    from zkapex_jax.models.train import load_checkpoint

    params, meta = load_checkpoint(tmp_path / "g")
    assert meta["model"] == "vit-test" and meta["data"] == "provider" and not meta["pretrained"]
    _, fresh = build_model_cached("vit-test", seed=0)
    from zkapex_jax.core.params import flatten_params

    fp, ff = flatten_params(params), flatten_params(fresh)
    assert set(fp) == set(ff) and all(np.shape(fp[k]) == np.shape(ff[k]) for k in fp)
    before = (tmp_path / "g" / "meta.json").read_bytes()
    for argv in (["train", "--data", str(tmp_path / "provider"), "--out", str(tmp_path / "g"), *m],  # exists
                 ["train", "--out", str(tmp_path / "g2"), "--pretrained", *m]):                    # ships none
        assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "ships no pretrained weights" in err and "Traceback" not in err
    assert (tmp_path / "g" / "meta.json").read_bytes() == before and not (tmp_path / "g2").exists()


def test_efficientnet_on_the_cli_reads_images_through_its_frozen_stem(tmp_path):
    """`--model efficientnet-lite0`: the image study's family (64 px, 10 classes, blocks 0–4
    frozen); the user's images go through the frozen stem before any verb sees them."""
    from types import SimpleNamespace

    from zkapex_jax.cli import _inputs
    from zkapex_jax.models.efficientnet import SMALL_INPUT, input_shape

    args = SimpleNamespace(model="efficientnet-lite0", tokenizer=None, seq_len=64, block_size=16, fraction=None,
                           pattern=None)
    fam = _inputs.family_of(args)
    assert fam.overrides == tuple(sorted(SMALL_INPUT)) and _inputs.builtin_image(args)
    cfg = _inputs.study_config(args, fam)
    assert dict(cfg.model_overrides) == dict(SMALL_INPUT) and cfg.mask_pattern == fam.mask_patterns[0]
    make_folder(tmp_path / "imgs", classes=("1", "4"), per_class=2, size=(40, 30), mode="RGB")
    split = _inputs.user_split(fam, tmp_path / "imgs", "data")
    assert split.x.shape == (4, *input_shape(fam.config)) and split.x.shape[1:] != (64, 64, 3)
    assert np.isfinite(split.x).all() and sorted(split.y.tolist()) == [1, 1, 4, 4]


@pytest.mark.slow
def test_efficientnet_end_to_end_on_the_cli(tmp_path, capsys):
    """The whole protocol on the CLI with the pretrained EfficientNet-Lite0 (one expansion conv in
    the statement, a 0.2 % mask): train from the shipped weights, personalize, mask, layer-input
    curvature, commit, unlearn, prove, verify the deployed checkpoint (minutes)."""
    make_folder(tmp_path / "client", classes=("0", "2", "6"), per_class=4, seed=1, size=(32, 32), mode="RGB")
    make_folder(tmp_path / "provider", classes=("0", "2", "5", "7", "9"), per_class=4, seed=2)
    d = str(tmp_path)
    m = ["--model", "efficientnet-lite0"]
    pat = ["--pattern", "blocks/5/expand/kernel"]
    cache = ["--cache", d + "/cache"]
    steps = [["train", *m, "--pretrained", "--data", d + "/provider", "--epochs", "1", "--out", d + "/g"],
             ["personalize", *m, "--global", d + "/g", "--data", d + "/client", "--epochs", "1", "--out", d + "/p"],
             ["mask", *m, *pat, "--global", d + "/g", "--data", d + "/provider", "--forget-classes", "5,7,9",
              "--fraction", "0.002", "--out", d + "/mask.json"],
             ["fisher", *m, *pat, "--params", d + "/p", "--data", d + "/client", "--curvature", "layer_inputs",
              "--damping", "1e-3", "--relative-damping", "--out", d + "/f.npz"],
             ["commit", "--params", d + "/p", "--fisher", d + "/f.npz", "--client-id", "c", "--out", d + "/com.npz",
              "--secrets", d + "/sec.npz", *cache],
             ["unlearn", "--params", d + "/p", "--commitment", d + "/com.npz", "--secrets", d + "/sec.npz",
              "--mask", d + "/mask.json", "--out", d + "/u", *cache],
             ["prove", "--params", d + "/p", "--commitment", d + "/com.npz", "--secrets", d + "/sec.npz",
              "--mask", d + "/mask.json", "--request-id", "r", "--out", d + "/bundle", "--unlearned", d + "/u",
              "--opening", d + "/op.npz", "--jobs", "2", "--executor", "process", *cache]]
    for argv in steps:
        assert cli.main(argv) == 0, argv[0]
    capsys.readouterr()
    assert cli.main(["verify", d + "/bundle", "--commitment", d + "/com.npz", "--mask", d + "/mask.json",
                     "--request-id", "r", "--deployed", d + "/u", "--opening", d + "/op.npz", *cache]) == 0
    out = capsys.readouterr().out
    assert "VALID" in out and "the deployed model opens all of it" in out
