"""A multi-language code corpus from files that locally installed packages carry, a locally
trained byte-level BPE tokenizer, and fixed-length LM token sequences (Study 2's data).

Nothing is downloaded. Sources (first existing root wins, per language):

=============  ==========================================================================  ==========================
language       files                                                                       installed by
=============  ==========================================================================  ==========================
``python``     ``*.py`` of the interpreter's standard library (``sysconfig`` ``stdlib``,   Python itself
               without ``site-packages``)
``c``          ``*.h`` under ``/usr/include`` (without the C++ library)                      ``libc6-dev``, ``linux-libc-dev``
``cpp``        the libstdc++ headers ``/usr/include/c++/<N>`` (``*.h``, ``*.hpp``,          ``libstdc++-12-dev`` (``g++``)
               ``*.tcc`` and the extension-less standard headers)
``javascript`` ``*.js`` of the global npm packages (``npm root -g``: npm, corepack)          ``npm`` / ``nodejs``
``rust``       the Rust standard library: Debian's ``rust-src`` (``/usr/src/rustc-<V>/       ``apt-get install rust-src``;
               library``) if present, else rustup's ``rust-src`` (``lib/rustlib/src``),   or ``rustup component add
               else the source pages of rustup's ``rust-docs`` component (rustdoc HTML,   rust-src`` / ``rust-docs``,
               unescaped back to source), else Debian's ``/usr/share/cargo/registry``      or ``librust-*-dev``
``java``       the JDK's class library sources, read inside ``lib/src.zip`` (Debian's      ``apt-get install
               ``/usr/lib/jvm/openjdk-17`` first, then any ``/usr/lib/jvm/*/lib/src.zip``) openjdk-17-source``
``go``         the Go standard library ``/usr/share/go-<V>/src`` (``*.go``, without        ``apt-get install golang-src``
               ``testdata``)
``perl``       ``*.pm`` / ``*.pl`` of Perl's library (``/usr/share/perl``, ``/usr/lib/*/perl*``) ``perl-modules-5.36``
=============  ==========================================================================  ==========================

A root is a directory or a zip archive (``src.zip``): an archive's members are read in place, each
capped at 8 MiB uncompressed (a larger or corrupt member is skipped). License headers — a file's
leading comment block when it mentions a copyright or licence — are dropped by default
(``load_code_corpus(drop_license_headers=True)``): they are the same boilerplate in every file of a
package and would let a model score on text it has seen verbatim.

Environment overrides: ``ZKAPEX_CODE_ROOT_<LANG>`` (e.g. ``ZKAPEX_CODE_ROOT_RUST=/path``) replaces
the search roots of one language; ``RUSTUP_HOME`` is honoured; the tokenizer is cached under
``$ZKAPEX_CACHE/tokenizers`` (default ``~/.cache/zkapex/tokenizers``).

Determinism: file lists are sorted; exact duplicates (same content) are dropped keeping the first
path in sorted order; each file goes to ``train``/``val``/``test`` by a hash of its
language-relative path (so the split of a file does not depend on which other files exist and
evaluation text is never seen in training); within a split files are sampled in a seeded order up
to a byte cap. The tokenizer is trained on the training split only.
"""

from __future__ import annotations

import collections
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from .._io import atomic_write_text
from .._errors import ArtifactError, DataNotFoundError, ShapeError

__all__ = [
    "LANGUAGES",
    "SPLITS",
    "LanguageSource",
    "ArchiveMember",
    "strip_license_header",
    "CodeCorpus",
    "CodeTokenizer",
    "find_language_files",
    "read_source",
    "load_code_corpus",
    "train_bpe_tokenizer",
    "byte_tokenizer",
    "chunk_tokens",
    "encode_split",
    "make_lm_splits",
]

SPLITS = ("train", "val", "test")
TOKENIZER_FORMAT = "zkapex.code_tokenizer"
TOKENIZER_VERSION = 1
EOS = "<|endoftext|>"


# ----------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class LanguageSource:
    """Where one language's files live on a Debian machine and how to install them."""

    name: str
    roots: Callable[[], list[Path]]  # candidate roots, in order of preference; first non-empty wins
    accept: Callable[[Path], bool]  # file filter (relative to its root)
    install_hint: str
    reader: str = "text"  # "text" or "rustdoc_html" (decided per root by ``root_reader``)


def _env_roots(lang: str) -> list[Path] | None:
    v = os.environ.get(f"ZKAPEX_CODE_ROOT_{lang.upper()}")
    return [Path(p) for p in v.split(os.pathsep) if p] if v else None


def _python_roots() -> list[Path]:
    return [Path(sysconfig.get_paths()["stdlib"])]


def _python_accept(rel: Path) -> bool:
    parts = rel.parts
    return (
        rel.suffix == ".py"
        and "site-packages" not in parts
        and "dist-packages" not in parts
        and "__pycache__" not in parts
    )


def _c_roots() -> list[Path]:
    return [Path("/usr/include")]


def _c_accept(rel: Path) -> bool:
    return rel.suffix == ".h" and "c++" not in rel.parts


def _newest(paths: Iterable[Path]) -> list[Path]:
    """``paths`` sorted newest version first (by the numbers in their names)."""
    return sorted(paths, key=lambda p: [int(x) for x in re.findall(r"\d+", str(p))], reverse=True)


def _cpp_roots() -> list[Path]:
    versions = _newest(p for p in Path("/usr/include/c++").glob("*") if p.is_dir() and p.name.split(".")[0].isdigit())
    return versions[:1]  # the newest libstdc++


def _cpp_accept(rel: Path) -> bool:
    return rel.suffix in (".h", ".hpp", ".tcc") or (rel.suffix == "" and rel.name.isidentifier())


def _npm_root() -> list[Path]:
    out: list[Path] = []
    npm = shutil.which("npm")
    if npm:
        try:
            r = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0 and r.stdout.strip():
                out.append(Path(r.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    node = shutil.which("node")
    if node:  # <prefix>/bin/node -> <prefix>/lib/node_modules
        out.append(Path(os.path.realpath(node)).parent.parent / "lib" / "node_modules")
    out += [Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules"), Path("/usr/share/nodejs")]
    seen, uniq = set(), []
    for p in out:
        if str(p) not in seen:
            seen.add(str(p))
            uniq.append(p)
    return uniq


def _js_accept(rel: Path) -> bool:
    return rel.suffix in (".js", ".mjs", ".cjs") and not rel.name.endswith(".min.js")


def _rustup_home() -> Path:
    return Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))


def _toolchains() -> list[Path]:
    tc = sorted(p for p in (_rustup_home() / "toolchains").glob("*") if p.is_dir())
    # prefer stable, then the rest in sorted order
    return sorted(tc, key=lambda p: (not p.name.startswith("stable"), p.name))


def _rust_roots() -> list[Path]:
    roots: list[Path] = [p / "library" for p in _newest(Path("/usr/src").glob("rustc-*"))]  # Debian rust-src
    for t in _toolchains():
        roots.append(t / "lib" / "rustlib" / "src" / "rust" / "library")  # rust-src
    for t in _toolchains():
        roots.append(t / "share" / "doc" / "rust" / "html" / "src")  # rust-docs source pages
    roots.append(Path("/usr/share/cargo/registry"))  # Debian librust-*-dev
    return roots


def _rust_accept(rel: Path) -> bool:
    return rel.name.endswith(".rs") or rel.name.endswith(".rs.html")


def _java_roots() -> list[Path]:
    jvm = Path("/usr/lib/jvm")
    first = [jvm / "openjdk-17" / "lib" / "src.zip"]
    rest = [p for p in sorted(jvm.glob("*/lib/src.zip")) if p not in first] if jvm.is_dir() else []
    return first + rest


def _java_accept(rel: Path) -> bool:
    return rel.suffix == ".java" and rel.name != "module-info.java"


def _go_roots() -> list[Path]:
    return [p / "src" for p in _newest(Path("/usr/share").glob("go-*"))] + [Path("/usr/lib/go/src")]


def _go_accept(rel: Path) -> bool:
    return rel.suffix == ".go" and "testdata" not in rel.parts


def _perl_roots() -> list[Path]:
    return [Path("/usr/share/perl")] + sorted(Path("/usr/lib").glob("*-linux-gnu/perl*"))


def _perl_accept(rel: Path) -> bool:
    return rel.suffix in (".pm", ".pl")


LANGUAGES: dict[str, LanguageSource] = {
    "python": LanguageSource("python", _python_roots, _python_accept, "the Python standard library ships with Python; set ZKAPEX_CODE_ROOT_PYTHON"),
    "c": LanguageSource("c", _c_roots, _c_accept, "apt-get install libc6-dev linux-libc-dev"),
    "cpp": LanguageSource("cpp", _cpp_roots, _cpp_accept, "apt-get install g++ (libstdc++-12-dev)"),
    "javascript": LanguageSource("javascript", _npm_root, _js_accept, "apt-get install npm (or install Node.js with npm)"),
    "rust": LanguageSource(
        "rust",
        _rust_roots,
        _rust_accept,
        "apt-get install rust-src (or rustup component add rust-src / rust-docs, "
        "or apt-get install librust-serde-dev librust-regex-dev librust-syn-dev)",
    ),
    "java": LanguageSource("java", _java_roots, _java_accept, "apt-get install openjdk-17-source"),
    "go": LanguageSource("go", _go_roots, _go_accept, "apt-get install golang-src"),
    "perl": LanguageSource("perl", _perl_roots, _perl_accept, "apt-get install perl perl-modules-5.36"),
}


def _check_lang(lang: str) -> LanguageSource:
    if lang not in LANGUAGES:
        raise DataNotFoundError(f"unknown language {lang!r}; known: {sorted(LANGUAGES)}")
    return LANGUAGES[lang]


MAX_MEMBER_BYTES = 8 * 2**20  # an archive member larger than this (uncompressed) is skipped


@dataclass(frozen=True)
class ArchiveMember:
    """One file inside a zip archive root (e.g. a JDK's ``lib/src.zip``).

    ``archive`` is the zip file, ``member`` the member's path inside it; ``rel`` is that path as a
    relative path (what splits and file lists use)."""

    archive: Path
    member: str

    @property
    def rel(self) -> PurePosixPath:
        return PurePosixPath(self.member)

    @property
    def name(self) -> str:
        return self.rel.name

    def read_bytes(self) -> bytes:
        """The member's bytes; ``OSError`` when it is missing, corrupt or over ``MAX_MEMBER_BYTES``."""
        zf = _open_archive(str(self.archive))
        try:
            info = zf.getinfo(self.member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise OSError(f"{self.archive}!{self.member}: {info.file_size} bytes, over {MAX_MEMBER_BYTES}")
            with zf.open(info) as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
        except (KeyError, zipfile.BadZipFile, RuntimeError, ValueError, EOFError) as e:
            raise OSError(f"{self.archive}!{self.member}: {e}") from e
        if len(data) > MAX_MEMBER_BYTES:
            raise OSError(f"{self.archive}!{self.member}: over {MAX_MEMBER_BYTES} bytes")
        return data


def _byte_size(p: SourceFile) -> int | None:
    """The file's size in bytes without reading it (``None`` if it cannot be told)."""
    try:
        if isinstance(p, ArchiveMember):
            return _open_archive(str(p.archive)).getinfo(p.member).file_size
        return p.stat().st_size
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _open_archive(path: str) -> zipfile.ZipFile:
    """The open archive, cached per (path, size, mtime): a rewritten file is opened again."""
    st = os.stat(path)
    return _open_archive_at(path, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _open_archive_at(path: str, size: int, mtime_ns: int) -> zipfile.ZipFile:
    return zipfile.ZipFile(path)


SourceFile = Path | ArchiveMember


def _rel(f: SourceFile, root: Path) -> str:
    return f.member if isinstance(f, ArchiveMember) else f.relative_to(root).as_posix()


def _archive_files(root: Path, accept: Callable[[Path], bool]) -> list[ArchiveMember]:
    try:
        zf = _open_archive(str(root))
        infos = zf.infolist()
    except (OSError, zipfile.BadZipFile):
        return []
    out = []
    for info in infos:
        rel = PurePosixPath(info.filename)
        if info.is_dir() or rel.is_absolute() or ".." in rel.parts:
            continue
        if accept(rel):
            out.append(ArchiveMember(root, info.filename))
    return sorted(out, key=lambda m: m.member)


def _tree_files(root: Path, accept: Callable[[Path], bool]) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        d = Path(dirpath)
        for fn in sorted(filenames):
            p = d / fn
            if p.is_symlink() or not p.is_file():
                continue
            if accept(p.relative_to(root)):
                files.append(p)
    return sorted(files)


def find_language_files(lang: str) -> tuple[Path, list[SourceFile]]:
    """``(root, sorted files)`` of ``lang`` from the first candidate root that has any.

    A root is a directory (files are ``Path``s) or a zip archive (files are
    :class:`ArchiveMember`s). Raises ``DataNotFoundError`` saying how to install the files when no
    root has any."""
    src = _check_lang(lang)
    roots = _env_roots(lang) or src.roots()
    tried = []
    for root in roots:
        tried.append(str(root))
        if root.is_dir():
            files: list = _tree_files(root, src.accept)
        elif root.is_file() and zipfile.is_zipfile(root):
            files = _archive_files(root, src.accept)
        else:
            continue
        if files:
            return root, files
    raise DataNotFoundError(
        f"no {lang} source files found (looked in: {', '.join(tried) or 'nothing'}); "
        f"install them: {src.install_hint}; or set ZKAPEX_CODE_ROOT_{lang.upper()} to a directory "
        f"(or zip archive) of them"
    )


_RUSTDOC_CODE = re.compile(r'<pre class="rust"><code>(.*?)</code></pre>', re.S)
_RUSTDOC_LINE_ANCHOR = re.compile(r"<a href=#\d+ id=\d+ data-nosnippet>\d+</a>")
_TAG = re.compile(r"<[^>]+>")


def _rustdoc_to_source(page: str) -> str | None:
    m = _RUSTDOC_CODE.search(page)
    if not m:
        return None
    body = _RUSTDOC_LINE_ANCHOR.sub("", m.group(1))
    return html.unescape(_TAG.sub("", body))


_LICENSE_WORDS = re.compile(r"copyright|licen[cs]e|\bGPL\b|SPDX", re.I)
_LEADING_BLOCK = re.compile(r"\A\s*/\*.*?\*/[ \t]*\n?", re.S)
_LEADING_LINES = re.compile(r"\A(?:[ \t]*\n)*(?:[ \t]*(?://|#)[^\n]*\n)+")


def strip_license_header(text: str) -> str:
    """``text`` without its leading comment block when that block mentions a copyright or
    licence (``/* ... */``, or consecutive ``//`` / ``#`` lines; a ``#!`` line or a Python/Rust
    doc comment is kept as code). Other text is returned unchanged."""
    for pat in (_LEADING_BLOCK, _LEADING_LINES):
        m = pat.match(text)
        if not m:
            continue
        block = m.group(0)
        if block.lstrip().startswith(("#!", "//!", "///")) or not _LICENSE_WORDS.search(block):
            continue
        return text[m.end():].lstrip("\n")
    return text


def read_source(path: SourceFile | str, *, max_bytes: int | None = None,
                drop_license_header: bool = False) -> str | None:
    """The source text of one file or archive member (UTF-8; ``None`` when unreadable,
    undecodable or empty).

    rustdoc source pages (``*.rs.html``) are turned back into Rust source. ``drop_license_header``
    removes a leading licence comment (:func:`strip_license_header`). ``max_bytes`` truncates at
    the last line break before the cap."""
    if not isinstance(path, ArchiveMember):
        path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if path.name.endswith(".rs.html"):
        text = _rustdoc_to_source(text)
        if text is None:
            return None
    text = text.replace("\r\n", "\n").replace("\x00", "")
    if drop_license_header:
        text = strip_license_header(text)
    if max_bytes is not None and len(text.encode("utf-8")) > max_bytes:
        cut = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
        nl = cut.rfind("\n")
        text = cut[: nl + 1] if nl > 0 else cut
    return text if text.strip() else None


# ------------------------------------------------------------------------------------ corpus


def _split_of(lang: str, rel: str, fractions: Sequence[float]) -> str:
    h = int.from_bytes(hashlib.sha256(f"{lang}:{rel}".encode()).digest()[:8], "big") / 2**64
    a, b = fractions[0], fractions[0] + fractions[1]
    return "train" if h < a else ("val" if h < b else "test")


@dataclass
class CodeCorpus:
    """Texts of each language and split: ``texts[lang][split]`` is a list of file contents.

    ``files[lang][split]`` are the matching paths relative to ``roots[lang]``; ``digest`` is a
    sha256 over every language, split, path and text (what the tokenizer cache is keyed on)."""

    texts: dict[str, dict[str, list[str]]]
    files: dict[str, dict[str, list[str]]]
    roots: dict[str, str]
    settings: dict = field(default_factory=dict)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.texts)

    def num_bytes(self, lang: str, split: str) -> int:
        return sum(len(t.encode("utf-8")) for t in self.texts[lang][split])

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for lang in sorted(self.texts):
            for split in SPLITS:
                for rel, t in zip(self.files[lang][split], self.texts[lang][split]):
                    h.update(f"{lang}\0{split}\0{rel}\0".encode())
                    h.update(hashlib.sha256(t.encode("utf-8")).digest())
        return h.hexdigest()

    def summary(self) -> dict:
        return {
            lang: {
                split: {"files": len(self.files[lang][split]), "bytes": self.num_bytes(lang, split)}
                for split in SPLITS
            }
            for lang in self.texts
        }


def load_code_corpus(
    languages: Sequence[str],
    *,
    max_bytes: Mapping[str, int] | None = None,
    max_file_bytes: int = 32_768,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    drop_license_headers: bool = True,
) -> CodeCorpus:
    """Load the code corpus of ``languages``.

    max_bytes: byte cap per split, e.g. ``{"train": 2_000_000, "val": 200_000, "test": 200_000}``
      (default: those values), applied per language; files are taken in a seeded random order
      until the cap (a file that does not fit is skipped, smaller later ones may still fit).
    max_file_bytes: each file is truncated at a line break to at most this many bytes.
    fractions: (train, val, test) share of files, by a hash of the file's relative path.
    seed: the sampling order within a split (splits themselves do not depend on it).
    drop_license_headers: drop each file's leading licence comment (:func:`strip_license_header`).
    """
    if not languages:
        raise ValueError("languages must be a non-empty sequence")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages has duplicates: {list(languages)}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    caps = {"train": 2_000_000, "val": 200_000, "test": 200_000}
    if max_bytes is not None:
        unknown = set(max_bytes) - set(SPLITS)
        if unknown:
            raise ValueError(f"max_bytes has unknown splits {sorted(unknown)}; use {SPLITS}")
        caps.update(max_bytes)
    texts: dict[str, dict[str, list[str]]] = {}
    files: dict[str, dict[str, list[str]]] = {}
    roots: dict[str, str] = {}
    for li, lang in enumerate(languages):
        root, paths = find_language_files(lang)
        roots[lang] = str(root)
        by_split: dict[str, list[Path]] = {s: [] for s in SPLITS}
        raw_seen: set[bytes] = set()
        sizes = [_byte_size(p) for p in paths]
        shared = collections.Counter(sizes)
        for p, size in zip(paths, sizes):  # exact duplicate files: keep the first path in sorted order
            if size is None or shared[size] > 1:  # only a file of another's size can be its copy
                try:
                    key = hashlib.sha256(p.read_bytes()).digest()
                except OSError:
                    continue
                if key in raw_seen:
                    continue
                raw_seen.add(key)
            by_split[_split_of(lang, _rel(p, root), fractions)].append(p)
        texts[lang], files[lang] = {}, {}
        seen: set[bytes] = set()
        for si, split in enumerate(SPLITS):
            rng = np.random.default_rng([seed, li, si])
            order = rng.permutation(len(by_split[split]))
            chosen: list[tuple[str, str]] = []
            total = 0
            for i in order:
                if total >= caps[split]:
                    break
                p = by_split[split][i]
                t = read_source(p, max_bytes=max_file_bytes, drop_license_header=drop_license_headers)
                if t is None:
                    continue
                key = hashlib.sha256(t.encode("utf-8")).digest()
                if key in seen:  # same text after decoding/truncation as a file already taken
                    continue
                n = len(t.encode("utf-8"))
                if total + n > caps[split]:
                    continue
                seen.add(key)
                chosen.append((_rel(p, root), t))
                total += n
            chosen.sort()  # deterministic order independent of sampling
            files[lang][split] = [c[0] for c in chosen]
            texts[lang][split] = [c[1] for c in chosen]
        if not texts[lang]["train"]:
            raise DataNotFoundError(
                f"{lang}: no readable training files under {root}; install: {LANGUAGES[lang].install_hint}"
            )
    settings = {"max_bytes": caps, "max_file_bytes": max_file_bytes, "fractions": list(fractions), "seed": seed,
                "drop_license_headers": drop_license_headers}
    return CodeCorpus(texts=texts, files=files, roots=roots, settings=settings)


# --------------------------------------------------------------------------------- tokenizer


class CodeTokenizer:
    """A byte-level tokenizer: a trained BPE (``tokenizers``) or plain bytes (``kind="bytes"``).

    ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``, ``eos_id``; ``sha256``
    identifies the exact vocabulary and merges."""

    def __init__(self, kind: str, tokenizer_json: str | None = None):
        if kind not in ("bpe", "bytes"):
            raise ValueError(f"tokenizer kind must be 'bpe' or 'bytes', got {kind!r}")
        self.kind = kind
        self._json = tokenizer_json
        if kind == "bpe":
            from tokenizers import Tokenizer

            if tokenizer_json is None:
                raise ValueError("a BPE tokenizer needs its JSON")
            self._tok = Tokenizer.from_str(tokenizer_json)
            self.vocab_size = self._tok.get_vocab_size()
            eos = self._tok.token_to_id(EOS)
            if eos is None:
                raise ArtifactError(f"tokenizer has no {EOS!r} token")
            self.eos_id = int(eos)
        else:
            self._tok = None
            self.vocab_size = 257
            self.eos_id = 256

    @property
    def sha256(self) -> str:
        payload = self._json if self.kind == "bpe" else "bytes-257"
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def encode(self, text: str) -> list[int]:
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        return self._tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.kind == "bytes":
            return [self.encode(t) for t in texts]
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "bytes":
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self._tok.decode(ids, skip_special_tokens=False)

    # ---- artifact
    def save(self, path: str | os.PathLike, *, meta: Mapping | None = None) -> None:
        """Write the tokenizer atomically (JSON: format, version, sha256, tokenizer, meta)."""
        if self.kind != "bpe":
            raise ValueError("only a BPE tokenizer is saved; the byte tokenizer has no state")
        path = Path(path)
        doc = {
            "format": TOKENIZER_FORMAT,
            "version": TOKENIZER_VERSION,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "sha256": self.sha256,
            "meta": dict(meta or {}),
            "tokenizer": self._json,
        }
        atomic_write_text(path, json.dumps(doc))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CodeTokenizer":
        """Load and validate a saved tokenizer (``ArtifactError`` naming the file and problem)."""
        from .._io import loads_strict, read_regular_file

        path = Path(path)
        try:  # a regular file of at most 64 MiB (never a FIFO, a device or a 5 GiB file), strict JSON
            doc = loads_strict(read_regular_file(path, max_bytes=64 << 20, what="tokenizer"), f"tokenizer {path}")
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{path}: cannot read tokenizer: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != TOKENIZER_FORMAT:
            raise ArtifactError(f"{path}: not a {TOKENIZER_FORMAT} file")
        if doc.get("version") != TOKENIZER_VERSION:
            raise ArtifactError(f"{path}: unsupported version {doc.get('version')!r}")
        js = doc.get("tokenizer")
        if not isinstance(js, str) or hashlib.sha256(js.encode("utf-8")).hexdigest() != doc.get("sha256"):
            raise ArtifactError(f"{path}: tokenizer content does not match its sha256")
        try:
            tok = cls("bpe", js)
        except Exception as e:  # noqa: BLE001 — the tokenizers library raises its own bare exception
            raise ArtifactError(f"{path}: the tokenizer inside is not a valid BPE tokenizer ({str(e)[:120]})") from None
        if tok.vocab_size != doc.get("vocab_size"):
            raise ArtifactError(f"{path}: vocab_size {doc.get('vocab_size')} != {tok.vocab_size}")
        tok.meta = doc.get("meta", {})
        return tok


def byte_tokenizer() -> CodeTokenizer:
    """The 257-symbol byte tokenizer (256 bytes + end-of-text)."""
    return CodeTokenizer("bytes")


def default_cache_dir() -> Path:
    """``$ZKAPEX_CACHE/tokenizers`` (default ``~/.cache/zkapex/tokenizers``): the one cache root
    the package uses (ezkl keys and the local SRS live beside it)."""
    return Path(os.environ.get("ZKAPEX_CACHE", Path.home() / ".cache" / "zkapex")) / "tokenizers"


def train_bpe_tokenizer(
    texts: Sequence[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> CodeTokenizer:
    """Train a byte-level BPE of ``vocab_size`` symbols (incl. ``<|endoftext|>``) on ``texts``.

    Pass the TRAINING split only. The result is cached under ``cache_dir`` keyed by a sha256 of
    the texts and settings; a cached file is validated on load. Training is deterministic
    (single-threaded, fixed input order)."""
    if vocab_size < 257 or vocab_size > 65_536:
        raise ValueError(f"vocab_size must be in [257, 65536], got {vocab_size}")
    if not texts:
        raise ValueError("no texts to train the tokenizer on")
    h = hashlib.sha256(f"bpe-bytelevel v{TOKENIZER_VERSION} V={vocab_size} minf={min_frequency}\0".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    key = h.hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fpath = cache / f"code_bpe_{vocab_size}_{key[:16]}.json"
    if use_cache and fpath.exists():
        tok = CodeTokenizer.load(fpath)
        if tok.meta.get("key") == key:
            return tok
    tok = _train_bpe(texts, vocab_size, min_frequency)
    if use_cache:
        tok.save(fpath, meta={"key": key, "num_texts": len(texts)})
        tok.meta = {"key": key}
    return tok


def _train_bpe(texts: Sequence[str], vocab_size: int, min_frequency: int) -> CodeTokenizer:
    prev = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # deterministic and polite on shared CPUs
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
        return CodeTokenizer("bpe", tok.to_str())
    finally:
        if prev is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = prev


# ------------------------------------------------------------------------------ LM sequences


def chunk_tokens(ids: Sequence[int] | np.ndarray, seq_len: int, *, max_sequences: int | None = None) -> np.ndarray:
    """Cut a token stream into non-overlapping ``(n, seq_len)`` int32 rows (remainder dropped)."""
    if seq_len < 2:
        raise ShapeError(f"seq_len must be >= 2 (one prediction at least), got {seq_len}")
    arr = np.asarray(ids, dtype=np.int64)
    if arr.ndim != 1:
        raise ShapeError(f"ids must be 1-D, got shape {arr.shape}")
    n = arr.size // seq_len
    if max_sequences is not None:
        n = min(n, max_sequences)
    return arr[: n * seq_len].reshape(n, seq_len).astype(np.int32)


def encode_split(tokenizer: CodeTokenizer, texts: Sequence[str]) -> np.ndarray:
    """One token stream: every file's tokens followed by end-of-text, files in the given order."""
    out: list[int] = []
    for ids in tokenizer.encode_batch(texts):
        out.extend(ids)
        out.append(tokenizer.eos_id)
    return np.asarray(out, dtype=np.int32)


def make_lm_splits(
    corpus: CodeCorpus,
    tokenizer: CodeTokenizer,
    seq_len: int,
    *,
    max_sequences: Mapping[str, int] | None = None,
    seed: int | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``out[lang][split]`` = ``(n, seq_len)`` int32 token sequences.

    max_sequences: optional cap per split (e.g. ``{"train": 2000, "test": 256}``); when ``seed``
    is given, the capped rows are a seeded random subset (rows keep their stream order), else
    the first rows."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for li, lang in enumerate(corpus.languages):
        out[lang] = {}
        for si, split in enumerate(SPLITS):
            rows = chunk_tokens(encode_split(tokenizer, corpus.texts[lang][split]), seq_len)
            cap = None if max_sequences is None else max_sequences.get(split)
            if cap is not None and rows.shape[0] > cap:
                if seed is None:
                    rows = rows[:cap]
                else:
                    idx = np.sort(np.random.default_rng([seed, li, si]).choice(rows.shape[0], cap, replace=False))
                    rows = rows[idx]
            out[lang][split] = rows
    return out


if __name__ == "__main__":  # pragma: no cover - a quick look at what this machine carries
    for lang in LANGUAGES:
        try:
            root, fs = find_language_files(lang)
            print(f"{lang:11s} {len(fs):6d} files under {root}")
        except DataNotFoundError as e:
            print(f"{lang:11s} MISSING: {e}", file=sys.stderr)
