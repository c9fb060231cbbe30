"""Tests of the code corpus, the BPE tokenizer and LM chunking (zkapex_jax.code_data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zkapex_jax import ArtifactError, DataNotFoundError, ShapeError
from zkapex_jax.data import code as cd

SMALL = {"train": 40_000, "val": 8_000, "test": 8_000}


def _fake_tree(root, n=60, dup_every=10):
    """n python files with distinct content, plus exact duplicates of every ``dup_every``-th."""
    root.mkdir(parents=True, exist_ok=True)
    texts = {}
    for i in range(n):
        t = f"def f{i}(x):\n    return x + {i}\n" * (1 + i % 3)
        (root / f"m{i:03d}.py").write_text(t)
        texts[f"m{i:03d}.py"] = t
    for i in range(0, n, dup_every):
        (root / f"zz_dup{i:03d}.py").write_text(texts[f"m{i:03d}.py"])
    (root / "notes.txt").write_text("not python")
    (root / "bad.py").write_bytes(b"\xff\xfe\x00bad")
    return texts


# ---------------------------------------------------------------------- sources / corpus


def test_fake_language_split_dedup_and_determinism(tmp_path, monkeypatch):
    texts = _fake_tree(tmp_path / "py")
    monkeypatch.setenv("ZKAPEX_CODE_ROOT_PYTHON", str(tmp_path / "py"))
    root, files = cd.find_language_files("python")
    assert root == tmp_path / "py"
    assert [f.name for f in files] == sorted(f.name for f in files)
    assert all(f.suffix == ".py" for f in files)

    big = {"train": 10**9, "val": 10**9, "test": 10**9}
    c = cd.load_code_corpus(["python"], max_bytes=big, seed=0)
    got = {s: c.files["python"][s] for s in cd.SPLITS}
    all_files = [f for s in cd.SPLITS for f in got[s]]
    # disjoint by file, every unique readable file used once, duplicates and undecodable dropped
    assert len(all_files) == len(set(all_files))
    all_texts = [t for s in cd.SPLITS for t in c.texts["python"][s]]
    assert len(all_texts) == len(set(all_texts)) == len(texts)
    assert "bad.py" not in all_files and "notes.txt" not in all_files
    # the split of a file is a function of its path only (oracle: recompute it)
    for s in cd.SPLITS:
        for f in got[s]:
            if not f.startswith("zz_dup"):
                assert cd._split_of("python", f, (0.8, 0.1, 0.1)) == s
    # same call, same corpus; a different seed with no caps gives the same corpus too
    assert cd.load_code_corpus(["python"], max_bytes=big, seed=0).digest == c.digest
    assert cd.load_code_corpus(["python"], max_bytes=big, seed=5).digest == c.digest


def test_byte_caps_and_seeded_sampling(tmp_path, monkeypatch):
    _fake_tree(tmp_path / "py", n=200)
    monkeypatch.setenv("ZKAPEX_CODE_ROOT_PYTHON", str(tmp_path / "py"))
    caps = {"train": 2_000, "val": 300, "test": 300}
    a = cd.load_code_corpus(["python"], max_bytes=caps, seed=0)
    b = cd.load_code_corpus(["python"], max_bytes=caps, seed=1)
    for s in cd.SPLITS:
        assert 0 < a.num_bytes("python", s) <= caps[s]
    assert a.digest != b.digest  # the seed picks which files fill the caps
    train_a = set(a.files["python"]["train"])
    for s in ("val", "test"):
        assert not train_a & set(b.files["python"][s])  # a file's split never depends on the seed


def test_missing_language_says_how_to_install(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("ZKAPEX_CODE_ROOT_RUST", str(empty))
    with pytest.raises(DataNotFoundError, match="apt-get install rust-src"):
        cd.find_language_files("rust")
    with pytest.raises(DataNotFoundError, match="unknown language"):
        cd.find_language_files("cobol")


@pytest.mark.parametrize("bad", [dict(fractions=(0.5, 0.5)), dict(fractions=(0.9, 0.2, -0.1)),
                                 dict(max_bytes={"dev": 1})])
def test_bad_corpus_arguments(bad):
    with pytest.raises(ValueError):
        cd.load_code_corpus(["python"], **bad)


def test_rustdoc_page_to_source():
    page = (
        '<html><body><pre class="rust"><code><a href=#1 id=1 data-nosnippet>1</a>'
        '<span class="kw">fn </span>main() -&gt; <span class="prelude-ty">Option</span>&lt;u8&gt; {\n'
        '<a href=#2 id=2 data-nosnippet>2</a>    <span class="string">"a &amp; b"</span>; None\n'
        "<a href=#3 id=3 data-nosnippet>3</a>}\n</code></pre></body></html>"
    )
    assert cd._rustdoc_to_source(page) == 'fn main() -> Option<u8> {\n    "a & b"; None\n}\n'
    assert cd._rustdoc_to_source("<html>no code</html>") is None


def test_read_source_truncates_at_line_break(tmp_path):
    p = tmp_path / "a.py"
    p.write_text("abc\ndef\nghi\n")
    assert cd.read_source(p) == "abc\ndef\nghi\n"
    assert cd.read_source(p, max_bytes=9) == "abc\ndef\n"
    (tmp_path / "e.py").write_text("  \n\n")
    assert cd.read_source(tmp_path / "e.py") is None


def _zip(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_archive_root_members_are_read_in_place(tmp_path, monkeypatch):
    """A zip root (the JDK's src.zip): members filtered by suffix, split by member path, licence
    headers dropped, a directory entry, a traversal name and an oversized member never read."""
    header = "/*\n * Copyright (c) 2020, Someone. All rights reserved.\n * GPL v2\n */\n\n"
    members = {f"java.base/p/C{i}.java": header + f"package p;\nclass C{i} {{ int x = {i}; }}\n" for i in range(40)}
    members["java.base/p/module-info.java"] = "module p {}\n"
    members["java.base/p/notes.txt"] = "not java"
    members["../evil/E.java"] = "class E {}\n"
    members["java.base/big/Big.java"] = "class Big {}\n" + "// x\n" * 10
    members["java.base/big/Big.java"] = "class Big {}\n" + "// x\n" * 60  # 253 bytes
    monkeypatch.setattr(cd, "MAX_MEMBER_BYTES", 200)  # the others are ~115 bytes
    archive = _zip(tmp_path / "src.zip", members)
    monkeypatch.setenv("ZKAPEX_CODE_ROOT_JAVA", str(archive))
    root, files = cd.find_language_files("java")
    assert root == archive
    names = [f.member for f in files]
    assert names == sorted(names) and all(n.endswith(".java") for n in names)
    assert "../evil/E.java" not in names and "java.base/p/module-info.java" not in names
    big = {"train": 10**9, "val": 10**9, "test": 10**9}
    c = cd.load_code_corpus(["java"], max_bytes=big)
    got = [f for s in cd.SPLITS for f in c.files["java"][s]]
    assert "java.base/big/Big.java" not in got  # over the member cap: skipped
    assert len(got) == 40
    for s in cd.SPLITS:
        for f, t in zip(c.files["java"][s], c.texts["java"][s]):
            assert cd._split_of("java", f, (0.8, 0.1, 0.1)) == s
            assert t.startswith("package p;") and "Copyright" not in t
    kept = cd.load_code_corpus(["java"], max_bytes=big, drop_license_headers=False)
    assert all(t.startswith("/*") for s in cd.SPLITS for t in kept.texts["java"][s])


def test_corrupt_archive_is_not_a_root(tmp_path, monkeypatch):
    bad = tmp_path / "src.zip"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    monkeypatch.setenv("ZKAPEX_CODE_ROOT_JAVA", str(bad))
    with pytest.raises(DataNotFoundError, match="apt-get install openjdk-17-source"):
        cd.find_language_files("java")


@pytest.mark.parametrize("text, expected", [
    ("/* Copyright 2020 X */\nint a;\n", "int a;\n"),
    ("/*\n * Licensed under the Apache License\n */\n\n#include <a.h>\n", "#include <a.h>\n"),
    ("// Copyright 2009 The Go Authors.\n// license: BSD\n\n// Package x does y.\npackage x\n",
     "// Package x does y.\npackage x\n"),
    ("# Copyright (C) 2001 PSF\n# SPDX-License-Identifier: PSF\nimport os\n", "import os\n"),
    ("/* stdio.h: standard I/O */\nint a;\n", "/* stdio.h: standard I/O */\nint a;\n"),  # no licence words
    ("#!/usr/bin/env python\n# Copyright X\nimport os\n", "#!/usr/bin/env python\n# Copyright X\nimport os\n"),
    ("//! Crate docs; see the license of std.\nfn f() {}\n", "//! Crate docs; see the license of std.\nfn f() {}\n"),
    ("int a; /* Copyright later */\n", "int a; /* Copyright later */\n"),
])
def test_strip_license_header(text, expected):
    assert cd.strip_license_header(text) == expected


# the default run reads two corpora (the code study's personal and a global language); the larger
# ones (python 9.5 s, java 5.7 s, go 3.8 s in the default run's --durations) run with the slow set
_SLOW_CORPORA = ("python", "java", "go", "cpp", "javascript")


@pytest.mark.parametrize("lang", [pytest.param(lang, marks=pytest.mark.slow) if lang in _SLOW_CORPORA else lang
                                  for lang in ["python", "c", "cpp", "javascript", "rust", "java", "go"]])
def test_installed_languages_are_found_and_look_like_code(lang):
    root, files = cd.find_language_files(lang)
    assert len(files) >= 20, f"{lang}: only {len(files)} files under {root}"
    c = cd.load_code_corpus([lang], max_bytes={"train": 20_000, "val": 4_000, "test": 4_000})
    text = "".join(c.texts[lang]["train"])
    marker = {"python": "def ", "c": "#", "cpp": "template", "javascript": "function", "rust": "fn ",
              "java": "class ", "go": "func "}[lang]
    assert marker in text
    assert "<span" not in text and "&lt;" not in text  # rustdoc pages fully turned back into source


# ---------------------------------------------------------------------- tokenizer


@pytest.fixture(scope="module")
def small_corpus():
    return cd.load_code_corpus(["python", "c", "rust"], max_bytes=SMALL, seed=0)


def test_bpe_deterministic_roundtrip_and_cache(small_corpus, tmp_path):
    train = [t for lang in small_corpus.languages for t in small_corpus.texts[lang]["train"]]
    a = cd.train_bpe_tokenizer(train, 400, use_cache=False)
    b = cd.train_bpe_tokenizer(train, 400, use_cache=False)
    assert a.sha256 == b.sha256 and a.vocab_size == 400
    sample = small_corpus.texts["rust"]["test"][0][:2000] + "\nπ ≤ ∞ — 日本語\n"
    ids = a.encode(sample)
    assert max(ids) < a.vocab_size and len(ids) < len(sample.encode())  # compresses
    assert a.decode(ids) == sample  # byte-level: lossless on unseen text
    c = cd.train_bpe_tokenizer(train, 400, cache_dir=tmp_path)
    files = list(tmp_path.glob("code_bpe_400_*.json"))
    assert len(files) == 1 and c.sha256 == a.sha256
    d = cd.train_bpe_tokenizer(train, 400, cache_dir=tmp_path)  # from the cache
    assert d.sha256 == a.sha256
    assert cd.CodeTokenizer.load(files[0]).sha256 == a.sha256


def test_tokenizer_file_validation(small_corpus, tmp_path):
    train = small_corpus.texts["python"]["train"]
    tok = cd.train_bpe_tokenizer(train, 300, use_cache=False)
    p = tmp_path / "tok.json"
    tok.save(p)
    doc = json.loads(p.read_text())
    doc["tokenizer"] = doc["tokenizer"].replace('"<|endoftext|>"', '"<|eot|>"', 1)
    p.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="sha256"):
        cd.CodeTokenizer.load(p)
    p.write_text("{}")
    with pytest.raises(ArtifactError, match="zkapex.code_tokenizer"):
        cd.CodeTokenizer.load(p)
    with pytest.raises(ArtifactError, match="cannot read"):
        cd.CodeTokenizer.load(tmp_path / "missing.json")
    with pytest.raises(ValueError):
        cd.train_bpe_tokenizer(train, 100, use_cache=False)


def test_byte_tokenizer_roundtrip():
    tok = cd.byte_tokenizer()
    s = "fn main() { println!(\"héllo\"); }"
    assert tok.decode(tok.encode(s)) == s and tok.vocab_size == 257 and tok.eos_id == 256


# ---------------------------------------------------------------------- chunking


@pytest.mark.parametrize("n,t", [(10, 3), (9, 3), (2, 2), (1, 2)])
def test_chunk_tokens(n, t):
    ids = np.arange(n)
    out = cd.chunk_tokens(ids, t)
    assert out.dtype == np.int32 and out.shape == (n // t, t)
    np.testing.assert_array_equal(out.reshape(-1), np.arange((n // t) * t))


def test_chunk_tokens_errors():
    with pytest.raises(ShapeError):
        cd.chunk_tokens(np.arange(10), 1)
    with pytest.raises(ShapeError):
        cd.chunk_tokens(np.zeros((2, 5)), 2)


def test_make_lm_splits(small_corpus):
    tok = cd.byte_tokenizer()
    s = cd.make_lm_splits(small_corpus, tok, 32, max_sequences={"train": 50}, seed=0)
    assert set(s) == {"python", "c", "rust"}
    for lang in s:
        assert s[lang]["train"].shape == (50, 32)
        for split in cd.SPLITS:
            x = s[lang][split]
            assert x.dtype == np.int32 and x.ndim == 2 and x.shape[1] == 32 and x.shape[0] > 0
            assert x.min() >= 0 and x.max() < tok.vocab_size
    # the stream is every file followed by end-of-text, in corpus order
    stream = cd.encode_split(tok, small_corpus.texts["c"]["test"])
    np.testing.assert_array_equal(s["c"]["test"].reshape(-1), stream[: s["c"]["test"].size])
    assert int((stream == tok.eos_id).sum()) == len(small_corpus.texts["c"]["test"])
