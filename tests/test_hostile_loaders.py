"""The newer loaders under hostile input (issue 18 §3): checkpoints, Hugging Face directories,
tokenizers and secrets go through the same regular-file, size-capped, strictly typed reading as
the verifier. Each case: a clear error (ArtifactError / exit 2 on the CLI), no traceback, no hang."""

import json
import os

import pytest

from zkapex_jax import ArtifactError, cli
from zkapex_jax.models.train import load_checkpoint, save_checkpoint

from conftest import build_model_cached

from test_fuzz_cli import no_hang


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    _, params = build_model_cached("vit-test", seed=0)
    save_checkpoint(d / "ok", params)
    return d


def _copy_ckpt(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_fifo_inside_a_checkpoint_is_refused_without_blocking(ckpt, tmp_path):
    c = _copy_ckpt(ckpt / "ok", tmp_path / "c")
    victim = next(p for p in (c / "params").rglob("*") if p.is_file())
    victim.unlink()
    os.mkfifo(victim)
    with no_hang(60), pytest.raises(ArtifactError, match="not a regular file"):
        load_checkpoint(c)


def test_a_fifo_or_deeply_nested_checkpoint_meta_is_refused(ckpt, tmp_path):
    c = _copy_ckpt(ckpt / "ok", tmp_path / "c")
    (c / "meta.json").unlink()
    os.mkfifo(c / "meta.json")
    with no_hang(60), pytest.raises(ArtifactError):
        load_checkpoint(c)
    c2 = _copy_ckpt(ckpt / "ok", tmp_path / "c2")
    (c2 / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError, match="nested too deeply|not valid JSON"):
        load_checkpoint(c2)


@pytest.mark.parametrize("content", ["[1, 2]", "\"vit\"", "{\"model_type\": \"vit\", \"model_type\": \"opt\"}"])
def test_hugging_face_config_that_is_not_an_object(tmp_path, content, capsys):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(content)
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    assert cli.main(["fisher", "--model", str(d), "--params", str(d), "--out", str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err
    assert "config" in err and "Traceback" not in err and not (tmp_path / "f.npz").exists()


def test_garbage_safetensors_is_a_clear_error(tmp_path, capsys):
    from zkapex_jax.models import make_config

    d = tmp_path / "hf"
    d.mkdir()
    cfg = make_config("vit-test")
    cfg.save_pretrained(d)
    (d / "model.safetensors").write_bytes(os.urandom(4096))
    assert cli.main(["fisher", "--model", str(d), "--params", str(d), "--out", str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err
    assert "could not load the pretrained model" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["fifo", "devzero", "sparse", "badjson", "badbpe"])
def test_hostile_tokenizer_files(tmp_path, kind, capsys):
    import hashlib

    from zkapex_jax.data.code import TOKENIZER_FORMAT, TOKENIZER_VERSION, CodeTokenizer

    p = tmp_path / "tok.json"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "devzero":
        os.symlink("/dev/zero", p)
    elif kind == "sparse":
        with open(p, "wb") as f:
            f.truncate(5 << 30)
    elif kind == "badjson":
        p.write_text("{\"format\": " * 3)
    else:  # a valid envelope and digest around a tokenizer that the library cannot parse
        js = "{not a tokenizer"
        p.write_text(json.dumps({"format": TOKENIZER_FORMAT, "version": TOKENIZER_VERSION, "tokenizer": js,
                                 "sha256": hashlib.sha256(js.encode()).hexdigest(), "vocab_size": 10}))
    with no_hang(60), pytest.raises(ArtifactError):
        CodeTokenizer.load(p)
    with no_hang(60):
        rc = cli.main(["fisher", "--model", "opt-test", "--tokenizer", str(p), "--params", str(tmp_path / "nope"),
                       "--data", str(tmp_path), "--out", str(tmp_path / "f.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not (tmp_path / "f.npz").exists()


def test_checkpoint_meta_with_an_absurd_tree_is_refused(ckpt, tmp_path):
    c = _copy_ckpt(ckpt / "ok", tmp_path / "c")
    meta = json.loads((c / "meta.json").read_text())
    meta["tree"] = {"a": {"shape": [10 ** 30], "dtype": "float32"}}
    (c / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError):
        load_checkpoint(c)
