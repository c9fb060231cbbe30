"""The ``zkapex`` command: thin verbs over the protocol's stages (zkapex_jax.protocol) and, for
the built-in data and the demo, zkapex_jax.studies.image.

    zkapex keys     --block-size B [--logrows L] [--kmax K] [--keystore DIR] [--srs FILE]   (provider)
    zkapex mask     --global CKPT --out MASK.json [--model M] [--fraction F] [--seed S] (provider)
    zkapex personalize --global CKPT --out CKPT_P [--data D] [--epochs E] [--lr LR]   (client)
    zkapex fisher   --params CKPT --out FISHER.npz [--model M] [--block-size B] [--seed S] (client)
    zkapex commit   --params CKPT --fisher FISHER.npz --client-id ID --out COM.npz --secrets SEC.npz
                    [--logrows L] [--force]                                                (client)
    zkapex unlearn  --params CKPT --commitment COM --secrets SEC --mask MASK --out CKPT_U [--fisher F]
    zkapex prove    --params CKPT --commitment COM --secrets SEC --mask MASK [--fisher F]
                    --request-id R --out BUNDLE [--jobs N] [--executor process|ray]
                    [--ray-address ADDR] [--unlearned CKPT_U]                              (client)
    zkapex verify   BUNDLE --commitment COM --mask MASK [--keystore DIR] [--client-id ID]
                    [--request-id R] [--json]                                              (provider)
    zkapex demo     --out DIR [--big] [--jobs N]       the whole protocol on Fashion-MNIST

``--model`` is a built-in config or a local Hugging Face model directory; ``--data`` /
``--forget`` / ``--retain`` are an ``.npz`` or an image folder, or text/code files for a language
model (with ``--tokenizer`` and ``--seq-len``).

``verify`` exits 0 (valid), 1 (rejected, with the reason) or 2 (malformed input). Common
options: ``--cache DIR`` (keys/SRS cache, default ``$ZKAPEX_CACHE`` or ``~/.cache/zkapex``),
``--srs FILE`` (a ceremony SRS; without it a locally generated one is used and labelled INSECURE).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ._errors import ZkapexError

FISHER_FORMAT = "zkapex.fisher"

EXIT_VALID, EXIT_REJECTED, EXIT_MALFORMED = 0, 1, 2


# ----------------------------------------------------------------------------- argument types
# argparse turns a ValueError/ArgumentTypeError from a type into "error: argument --x: ..." and
# exit 2, before any work is done.

MAX_BLOCK_SIZE = 1 << 14


def _int_in(lo: int, hi: int | None = None):
    def parse(s: str) -> int:
        # ASCII digits only, optional leading '-': no spaces, '+', '_' or other scripts' digits
        if not (s.isascii() and (s.isdigit() or (s[:1] == "-" and s[1:].isdigit()))) or len(s) > 12:
            raise argparse.ArgumentTypeError(f"expected an integer (ASCII digits), got {s!r}")
        v = int(s, 10)
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi if hi is not None else '∞'}], got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def _float_in(lo: float, hi: float | None = None, *, lo_open=False):
    import math

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if not math.isfinite(v) or v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]" if hi is not None else f"≥ {lo:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {rng}, got {s!r}")
        return v

    parse.__name__ = "number"
    return parse


def _text(s: str) -> str:
    if not s or not s.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if len(s) > 256 or any(ord(c) < 32 for c in s):
        raise argparse.ArgumentTypeError("must be ≤ 256 printable characters")
    return s


def _path(s: str) -> str:
    if not s or "\x00" in s:
        raise argparse.ArgumentTypeError(f"not a usable path: {s!r}")
    return s


def _file(s: str) -> str:
    """A path that names a file (a mask, Fisher, commitment, secrets, opening, tokenizer, SRS):
    a trailing slash or a final '.' / '..' names a directory and is refused."""
    s = _path(s)
    if s.endswith(("/", os.sep)) or os.path.basename(s) in (".", ".."):
        raise argparse.ArgumentTypeError(f"{s!r} names a directory (trailing slash or '.'); give a file name")
    return s


BLOCK = _int_in(1, MAX_BLOCK_SIZE)
POS = _int_in(1)
LOGROWS = _int_in(1, 26)
SEED = _int_in(0, 2**31 - 1)
NONNEG = _int_in(0, 4096)


def _say(msg: str):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- file helpers

def save_fisher(path, fisher, layout) -> str:
    """Write the client's block Fisher (nb,B,B) with its BlockLayout."""
    from .protocol import save_arrays

    return save_arrays(path, FISHER_FORMAT, 1, {"fisher": np.asarray(fisher)}, {"layout": layout.to_dict()})


def load_fisher(path):
    """(fisher (nb,B,B) float64, BlockLayout)."""
    from ._errors import ArtifactError
    from .core.blocks import BlockLayout
    from .protocol import load_arrays

    arrs, meta = load_arrays(path, FISHER_FORMAT)
    try:
        layout = BlockLayout.from_dict(meta["layout"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path}: malformed layout ({e})") from None
    f = np.asarray(arrs.get("fisher"), dtype=np.float64)
    if f.shape != (layout.num_blocks, layout.block_size, layout.block_size):
        raise ArtifactError(f"{path}: fisher has shape {f.shape}, layout needs "
                            f"({layout.num_blocks}, {layout.block_size}, {layout.block_size})")
    return f, layout


def theta_blocks(params, layout) -> np.ndarray:
    from .core.params import get_paths

    return np.asarray(layout.to_blocks(get_paths(params, layout.paths)), dtype=np.float64)


def load_mask(mask_path, layout) -> tuple[np.ndarray, str]:
    """(the request's (nb,B) blocks — int8 codes 0 / 1 masked / 2 protected — and the mask file's
    content hash: what a statement binds)."""
    from .core.mask import Mask

    m = Mask.load(mask_path)
    return m.request_blocks(layout), m.content_hash()


def rest_of(params, layout) -> dict:
    """Every parameter outside the statement's kernels ({path: array})."""
    from .protocol.binding import split_rest

    return split_rest(params, layout.paths)


def _layout_of(com):
    from ._errors import ArtifactError
    from .core.blocks import BlockLayout

    if com.layout is None:
        raise ArtifactError(f"{com.path}: commitment has no block layout")
    return BlockLayout.from_dict(com.layout)


def _check_srs(args):
    """--srs must name a readable regular file (checked before any key store is touched)."""
    srs = getattr(args, "srs", None)
    if srs is not None:
        import stat as _stat

        try:
            st = os.stat(srs)
        except OSError as e:
            raise ZkapexError(f"--srs {srs}: {e.strerror}") from None
        if not _stat.S_ISREG(st.st_mode):
            raise ZkapexError(f"--srs {srs}: not a regular file")


def _keystore(args, attr="cache"):
    from .protocol import KeyStore

    _check_srs(args)
    return KeyStore(getattr(args, attr, None), srs_path=getattr(args, "srs", None))


def _is_hf_dir(path) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


@functools.lru_cache(maxsize=2)
def _load_hf_dir(path):
    """``(model, params)`` of a Hugging Face directory, loaded once per command even when
    ``--model`` and ``--params`` name the same one (the cache is cleared at the start of every
    :func:`main`)."""
    from .models import load_pretrained

    return load_pretrained(path)


def _load_params(path):
    """Parameters from a zkapex checkpoint or a local Hugging Face model directory."""
    from .models.train import load_checkpoint

    if _is_hf_dir(path):
        return _load_hf_dir(os.path.realpath(path))[1]
    return load_checkpoint(path)[0]


def _tokenizer(args):
    from .data.code import CodeTokenizer

    if not getattr(args, "tokenizer", None):
        return None
    return CodeTokenizer.load(args.tokenizer)


def _family(args):
    """The model family of --model: a built-in config name or a local Hugging Face directory.
    A causal LM needs --tokenizer (its vocabulary sets the model's)."""
    from .models import MODEL_CONFIGS, family, family_of_model, make_config

    if _is_hf_dir(args.model):
        fam = family_of_model(_load_hf_dir(os.path.realpath(args.model))[0])
    elif args.model in MODEL_CONFIGS:
        lm = not hasattr(make_config(args.model), "image_size")
        tok = _tokenizer(args)
        if lm and tok is None:
            raise ZkapexError(f"--model {args.model!r} is a language model: give --tokenizer (a zkapex "
                              "code tokenizer JSON) so its data folders can be tokenized")
        fam = family(args.model, vocab_size=tok.vocab_size) if lm else family(args.model)
    else:
        raise ZkapexError(f"--model {args.model!r}: neither a built-in config ({', '.join(sorted(MODEL_CONFIGS))}) "
                          "nor a Hugging Face model directory (config.json + weights)")
    if fam.kind == "lm":
        if getattr(args, "tokenizer", None) is None:
            raise ZkapexError("a language model needs --tokenizer")
        if args.seq_len > fam.config.max_position_embeddings:
            raise ZkapexError(f"--seq-len {args.seq_len} exceeds the model's {fam.config.max_position_embeddings} "
                              "positions")
    return fam


def _builtin_image(args) -> bool:
    from .models import MODEL_CONFIGS

    return args.model in MODEL_CONFIGS and not _is_hf_dir(args.model)


def _check_model_ckpt(fam, params, path):
    """The checkpoint's parameter shapes must be the model's (no JAX shape errors later)."""
    from .core.params import flatten_params

    try:
        want = {p: tuple(v.shape) for p, v in flatten_params(fam.param_shapes()).items()}
    except (KeyError, ValueError) as e:
        raise ZkapexError(f"--model {fam.name!r}: {e}") from None
    got = {p: tuple(np.shape(v)) for p, v in flatten_params(params).items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise ZkapexError(f"{path}: checkpoint does not match --model {fam.name!r} (e.g. {diff}); "
                          "pass the --model it was trained with")


def _load_client(args):
    from .protocol import load_commitment, load_secrets

    com = load_commitment(args.commitment)
    sec = load_secrets(args.secrets, com)
    if args.fisher is not None:
        fisher, layout = load_fisher(args.fisher)
        if layout.to_dict() != com.layout:
            raise ZkapexError(f"{args.fisher}: block layout differs from the commitment's")
    else:  # the secrets carry the committed Â (computed once at commit time)
        from .core.blocks import BlockLayout

        if sec.inverse_q is None:
            raise ZkapexError(f"{args.secrets}: these secrets do not carry the committed inverse Fisher "
                              "(written by an older zkapex): pass --fisher")
        try:
            fisher, layout = None, BlockLayout.from_dict(com.layout)
        except (TypeError, ValueError, KeyError) as e:
            raise ZkapexError(f"{args.commitment}: no usable block layout ({e}): pass --fisher") from None
    params = _load_params(args.params)
    from .protocol.prover import ProofError, check_rest

    try:  # the personalized checkpoint must be the committed one, outside the statement too
        check_rest(com, sec, rest_of(params, layout))
    except ProofError as e:
        raise ZkapexError(f"{args.params}: not the committed personalized model ({e})") from None
    mb, mask_sha = load_mask(args.mask, layout)
    return com, sec, fisher, layout, params, theta_blocks(params, layout), mb, mask_sha


# ----------------------------------------------------------------------------- verbs

def _commit_spec(block_size, logrows, keystore):
    from .protocol import CommitSpec
    from .protocol.statement import default_logrows

    lr = logrows if logrows is not None else default_logrows(block_size, root=keystore.root)
    return CommitSpec(block_size=block_size, logrows=lr)


def cmd_keys(args) -> int:
    from .protocol.statement import bucket_sizes, bucket_spec

    ks = _keystore(args, "keystore")
    cs = _commit_spec(args.block_size, args.logrows, ks)  # validates B against logrows before any build
    t0 = time.perf_counter()
    built = []
    for kmax in ([args.kmax] if args.kmax else bucket_sizes(cs.block_size)):
        spec = bucket_spec(cs, kmax, root=ks.root)
        if spec is None:
            continue
        art = ks.ensure(spec)
        built.append({"spec": spec.key, "kmax": kmax, "chunk_blocks": spec.chunk_blocks, "num_rows": art.num_rows,
                      "vk_sha256": art.meta["vk_sha256"], "pk_bytes": art.meta["pk_bytes"],
                      "bound_units": 1 + float(spec.epsilon), "srs_insecure": art.srs_insecure})
    _say(json.dumps({"logrows": cs.logrows, "circuits": built, "seconds": round(time.perf_counter() - t0, 2)}, indent=1))
    if any(b["srs_insecure"] for b in built):
        _say("WARNING: locally generated SRS — INSECURE, for tests only (pass --srs with a ceremony file)")
    return 0


def _cfg(args, fam=None):
    """The study defaults (mask method, sizes, recipes) for the CLI's verbs; the mask pattern
    defaults to the family's (fc1 of every layer)."""
    from .studies.image import PipelineConfig

    kw = dict(model=args.model, block_size=args.block_size)
    if fam is not None:
        kw["mask_pattern"] = fam.mask_patterns if len(fam.mask_patterns) > 1 else fam.mask_patterns[0]
    if getattr(args, "fraction", None) is not None:
        kw["mask_fraction"] = args.fraction
    if getattr(args, "pattern", None):
        kw["mask_pattern"] = args.pattern
    return PipelineConfig(**kw)


def _model_io(fam):
    """(image (H, W, C), num_labels) of an image classifier."""
    c = fam.config
    return (int(c.image_size), int(c.image_size), int(c.num_channels)), int(c.num_labels)


def _user_split(fam, path, what, min_examples=1, args=None):
    """The user's data for ``fam``: a ``Split`` of images, or ``(n, T)`` token rows for an LM."""
    if fam.kind == "lm":
        from .data.files import load_token_sequences

        rows = load_token_sequences(path, _tokenizer(args), args.seq_len, min_sequences=min_examples)
        _say(f"{what}: {rows.shape[0]} sequences of {rows.shape[1]} tokens from {path}")
        return rows
    from .data.files import load_labelled

    shape, k = _model_io(fam)
    split, mapping = load_labelled(path, image_shape=shape, num_labels=k, min_examples=min_examples)
    cls = np.unique(split.y).tolist()
    _say(f"{what}: {split.n} images of {len(cls)} classes {cls} from {path}"
         + (f" (folders → labels {mapping})" if mapping else ""))
    return split


def _as_data(fam, split):
    return split if fam.kind == "lm" else (split.x, split.y)


def _n(split) -> int:
    return int(split.shape[0]) if isinstance(split, np.ndarray) else split.n


def _subsample(split, n, seed):
    from .studies.image import _subsample as sub_split

    if isinstance(split, np.ndarray):
        if n is None or n >= split.shape[0]:
            return split
        return split[np.sort(np.random.default_rng(seed).choice(split.shape[0], size=n, replace=False))]
    return sub_split(split, n, seed)


def _provider_splits(args, fam):
    """(forget, retain, meta) from --forget/--retain, or --data split by --forget-classes;
    None: the built-in split."""
    from .data.files import parse_classes, select_classes

    if args.forget or args.retain:
        if not (args.forget and args.retain) or args.data:
            raise ZkapexError("give --forget and --retain together (or --data with --forget-classes)")
        forget = _user_split(fam, args.forget, "forget", args=args)
        retain = _user_split(fam, args.retain, "retain", args=args)
        return forget, retain, {"forget_classes": None, "forget_data": os.path.basename(os.path.normpath(args.forget)),
                                "retain_data": os.path.basename(os.path.normpath(args.retain))}
    if args.data:
        if fam.kind == "lm":
            raise ZkapexError("a language model's forget set is a folder: give --forget and --retain")
        if not args.forget_classes:
            raise ZkapexError("--data needs --forget-classes (e.g. --forget-classes 5,7,9)")
        split = _user_split(fam, args.data, "data")
        classes = parse_classes(args.forget_classes, _model_io(fam)[1])
        forget, retain = select_classes(split, classes), select_classes(split, classes, keep=False)
        if forget.n == 0 or retain.n == 0:
            raise ZkapexError(f"{args.data}: the forget classes {list(classes)} leave "
                              f"{forget.n} forget and {retain.n} retain images; both must be non-empty")
        return forget, retain, {"forget_classes": sorted(int(c) for c in classes),
                                "data": os.path.basename(os.path.normpath(args.data))}
    if args.forget_classes:
        raise ZkapexError("--forget-classes needs --data")
    if not _builtin_image(args) or fam.kind != "classifier":
        raise ZkapexError(f"--model {args.model!r} has no built-in data: give --forget and --retain"
                          + (" (text/code folders)" if fam.kind == "lm" else " (or --data with --forget-classes)"))
    return None


def _client_data(args, fam, cfg, what, min_examples=1):
    """--data, or the built-in personalization split (built-in image models only)."""
    if args.data:
        return _user_split(fam, args.data, what, min_examples=min_examples, args=args)
    if not _builtin_image(args) or fam.kind != "classifier":
        raise ZkapexError(f"--model {args.model!r} has no built-in data: give --data"
                          + (" (a text/code file or folder)" if fam.kind == "lm" else ""))
    from .studies import image as pl

    return pl.load_data(cfg, args.seed).personal_train


def _model_and_params(args, path):
    """``(family, cfg, params)`` of the verbs that read a model: ``--model``, the study defaults,
    and the parameters at ``path`` checked against the model's shapes."""
    fam = _family(args)
    params = _load_params(path)
    _check_model_ckpt(fam, params, path)
    return fam, _cfg(args, fam), params


def cmd_mask(args) -> int:
    from .protocol import provider
    from .studies import image as pl

    _refuse_outputs(args.out, force=args.force)
    fam, cfg, theta_g = _model_and_params(args, args.global_ckpt)
    layout = pl.block_layout(cfg, theta_g)  # the pattern selects kernels
    own = _provider_splits(args, fam)
    if own is None:
        data = pl.load_data(cfg, args.seed)
        forget, retain = data.forget_train, data.retain_train
        meta = {}
    else:
        forget, retain, meta = own
    forget = _subsample(forget, cfg.n_mask_forget, args.seed)
    retain = _subsample(retain, cfg.n_mask_retain, args.seed + 1)
    scores = provider.score_weights(fam, theta_g, _as_data(fam, forget), _as_data(fam, retain),
                                    patterns=cfg.mask_pattern, method=cfg.mask_method, h=cfg.mask_h, r=cfg.mask_r,
                                    damping=cfg.mask_damping, chunk_size=cfg.fisher_chunk)
    meta.update(n_forget=_n(forget), n_retain=_n(retain))
    m = pl.provider_mask(cfg, theta_g, None, seed=args.seed, scores=scores, meta=meta)
    if args.protect:
        from .core.mask import protect_top

        m = protect_top(m, scores, layout, args.protect)
    digest = m.save(args.out)
    extra = f", {m.num_protected} protected" if args.protect else ""
    _say(f"mask: {m.num_masked} of {m.size} weights ({m.fraction:.2%}){extra} → {args.out} (sha256 {digest[:16]}…)")
    return 0


def cmd_fisher(args) -> int:
    from .protocol import client
    from .studies import image as pl

    _refuse_outputs(args.out, force=args.force)
    fam, cfg, params = _model_and_params(args, args.params)
    layout = pl.block_layout(cfg, params)
    data = _client_data(args, fam, cfg, "client data")
    import jax

    try:
        f = client.client_curvature(fam, params, _as_data(fam, data), layout, kind=args.curvature,
                                    damping=cfg.damping if args.damping is None else args.damping,
                                    relative=args.relative_damping, chunk_size=cfg.fisher_chunk,
                                    key=jax.random.PRNGKey(args.seed))
    except ValueError as e:  # a curvature this family cannot give (e.g. 'true' for a language model)
        raise ZkapexError(f"--curvature {args.curvature}: {e}") from None
    save_fisher(args.out, f, layout)
    _say(f"curvature ({args.curvature}): {layout.num_blocks} blocks of {layout.block_size} from {_n(data)} examples "
         f"→ {args.out}")
    return 0


def cmd_personalize(args) -> int:
    import jax

    from .models.train import save_checkpoint
    from .protocol import client
    from .studies import image as pl

    _refuse_outputs(args.out, force=args.force, checkpoint=True)
    if Path(args.out).resolve() == Path(args.global_ckpt).resolve():
        raise ZkapexError("--out must differ from --global")
    fam, cfg, theta_g = _model_and_params(args, args.global_ckpt)
    kw = {k: v for k, v in (("pers_epochs", args.epochs), ("pers_lr", args.lr), ("layer_decay", args.layer_decay),
                            ("pers_batch", args.batch)) if v is not None}
    cfg = cfg.replace(**kw)
    data = _client_data(args, fam, cfg, "client data", min_examples=2)
    t0 = time.perf_counter()
    theta_p, hist = client.personalize(fam, theta_g, _as_data(fam, data), pl.personal_recipe(cfg),
                                       key=jax.random.PRNGKey(args.seed))
    save_checkpoint(args.out, theta_p, {"model": args.model, "personalized_from": str(args.global_ckpt),
                                        "epochs": cfg.pers_epochs, "lr": cfg.pers_lr, "layer_decay": cfg.layer_decay})
    acc = fam.accuracy(theta_p, _as_data(fam, data))
    unit = "sequences" if fam.kind == "lm" else "images"
    _say(f"personalized: {_n(data)} {unit}, {cfg.pers_epochs} epochs (AdamW lr {cfg.pers_lr:g}, layer decay "
         f"{cfg.layer_decay:g}) in {time.perf_counter() - t0:.1f} s; train accuracy {acc:.3f} → {args.out}")
    return 0


def _refuse_outputs(*paths, force=False, checkpoint=False):
    """Outputs must differ from each other, and exist only with --force; a ``checkpoint`` output
    that exists must be a zkapex checkpoint (a user's folder is never replaced), checked before
    any work."""
    from .models.train import _is_checkpoint_dir

    rp = [Path(p).resolve() for p in paths]
    if len(set(rp)) != len(rp):
        raise ZkapexError(f"output paths must differ: {', '.join(str(p) for p in paths)}")
    for p in paths:
        if Path(p).exists() and not force:
            raise ZkapexError(f"{p} exists; pass --force to replace it")
        if checkpoint and os.path.lexists(p) and not _is_checkpoint_dir(p):
            raise ZkapexError(f"{p} exists and is not a zkapex checkpoint; refusing to replace it")


def cmd_commit(args) -> int:
    from .protocol import commit_personalization, save_commitment

    _refuse_outputs(args.out, args.secrets, force=args.force)
    for p in (args.out, args.secrets):
        if Path(p).resolve() in (Path(args.params).resolve(), Path(args.fisher).resolve()):
            raise ZkapexError(f"output {p} is one of the inputs")
    fisher, layout = load_fisher(args.fisher)
    params = _load_params(args.params)
    ks = _keystore(args)
    cs = _commit_spec(layout.block_size, args.logrows, ks)
    com, sec = commit_personalization(theta_blocks(params, layout), fisher, cs, client_id=args.client_id,
                                      keystore=ks, layout=layout.to_dict(), progress=True,
                                      rest=rest_of(params, layout))
    com = save_commitment(args.out, com, sec, args.secrets)
    _say(f"commitment: {com.num_blocks} blocks × ({cs.block_size} inverse-Fisher columns + θp), logrows "
         f"{cs.logrows} → {args.out} (sha256 {com.sha256[:16]}…); secrets → {args.secrets} (keep private)")
    return 0


def cmd_unlearn(args) -> int:
    from .core.params import set_paths
    from .protocol import unlearn_committed
    from .models.train import save_checkpoint

    _refuse_outputs(args.out, force=args.force, checkpoint=True)
    for other in (args.params, args.fisher, args.commitment, args.secrets, args.mask):
        if other is not None and Path(other).resolve() == Path(args.out).resolve():
            raise ZkapexError(f"--out {args.out} is one of the inputs")
    com, sec, fisher, layout, params, tb, mb, _ = _load_client(args)
    u = unlearn_committed(tb, fisher, mb, com, sec, keystore=_keystore(args))
    theta_u = set_paths(params, {p: np.asarray(v, dtype=np.float64).astype(np.asarray(layout_leaf).dtype)
                                 for (p, v), layout_leaf in zip(layout.from_blocks(u.theta_u).items(),
                                                                _leaves(params, layout))})
    save_checkpoint(args.out, theta_u, {"unlearned_from": str(args.params), "commitment_sha256": com.sha256})
    _say(f"unlearned: {int((mb == 1).sum())} weights removed ({int((mb == 2).sum())} protected) in {len(u.witnesses)} blocks; certified within "
         f"{u.bound_units:.3f} units of 2^-{com.theta_exp} → {args.out}")
    return 0


def _leaves(params, layout):
    from .core.params import get_paths

    flat = get_paths(params, layout.paths)
    return [flat[p] for p in layout.paths]


def cmd_prove(args) -> int:
    from .protocol import prove_unlearning
    from .protocol.prover import ProofError

    if os.path.lexists(args.out):
        raise ZkapexError(f"{args.out} exists; choose a new bundle directory")
    if args.opening is not None:
        if os.path.lexists(args.opening) and not args.force:
            raise ZkapexError(f"{args.opening} exists; pass --force to replace it")
        if Path(args.opening).resolve() in {Path(x).resolve() for x in (args.params, args.fisher, args.commitment,
                                                                         args.secrets, args.mask, args.out)
                                            if x is not None}:
            raise ZkapexError(f"--opening {args.opening} is one of the inputs or the bundle")
    if args.executor == "ray" and args.ray_address:
        from .protocol.prover import check_ray_address

        check_ray_address(args.ray_address)  # before any work: ray.init would retry for ever
    com, sec, fisher, layout, params, tb, mb, mask_sha = _load_client(args)
    theta_u = rest_u = None
    if args.unlearned:
        unl = _load_params(args.unlearned)
        from .protocol.binding import rest_difference

        rest_u = rest_of(unl, layout)
        diff = rest_difference(rest_of(params, layout), rest_u)
        if diff:
            raise ProofError(f"{args.unlearned}: {diff}")
        theta_u = theta_blocks(unl, layout)
    opening_tmp = None
    if args.opening is not None:  # written beside, renamed over --opening only once the bundle exists
        opening_tmp = Path(args.opening).with_name(f".{Path(args.opening).name}.{os.getpid()}.tmp")
    t0 = time.perf_counter()
    try:
        out = prove_unlearning(tb, fisher, mb, com, sec, request_id=args.request_id, out_dir=args.out,
                               keystore=_keystore(args), jobs=args.jobs, progress=True, executor=args.executor,
                               ray_address=args.ray_address, theta_u=theta_u, rest_u=rest_u, mask_sha256=mask_sha,
                               opening_out=opening_tmp)
        if opening_tmp is not None:
            os.replace(opening_tmp, args.opening)
    finally:
        if opening_tmp is not None and opening_tmp.exists():
            opening_tmp.unlink()
    st = json.loads((Path(out) / "statement.json").read_text())
    _say(f"bundle: {len(st['proofs'])} proofs for {st['prover']['masked_blocks']} masked blocks → {out} "
         f"({time.perf_counter() - t0:.1f} s)" + (f"; deployment opening → {args.opening} (give it only with "
                                                   "the deployed model)" if args.opening else ""))
    return 0


def cmd_verify(args) -> int:
    from .protocol import load_commitment, verify_bundle

    try:
        if (args.deployed is None) != (args.opening is None):
            raise ZkapexError("--deployed and --opening go together (the deployed model and its opening)")
        com = load_commitment(args.commitment)
        layout = _layout_of(com)
        mb, mask_sha = load_mask(args.mask, layout)
        deployed = None
        if args.deployed is not None:
            from .protocol.binding import Opening

            dep = _load_params(args.deployed)
            deployed = (theta_blocks(dep, layout), rest_of(dep, layout), Opening.load(args.opening))
        res = verify_bundle(args.bundle, com, mb, keystore=_keystore(args, "keystore"), client_id=args.client_id,
                            request_id=args.request_id, progress=not args.json, mask_sha256=mask_sha,
                            deployed=deployed)
    except (ValueError, OSError) as e:  # ZkapexError/ArtifactError are ValueErrors
        _emit_verify(args, {"valid": False, "malformed": True, "reason": str(e)})
        return EXIT_MALFORMED
    except RuntimeError as e:  # the provider's own key store could not be built (ezkl stage failed)
        _emit_verify(args, {"valid": False, "malformed": True, "reason": f"key store: {e}"})
        return EXIT_MALFORMED
    warnings = []
    if res.valid and args.request_id is None:
        warnings.append(f"no --request-id given: any bundle of this client for this mask verifies (this one is for "
                        f"request {ascii(res.request_id)}); pin the request you issued")
    if res.valid and args.deployed is None:
        warnings.append("the deployed model was not checked: VALID covers the model the commitments define; pass "
                        "--deployed CKPT --opening FILE to check a deployed checkpoint")
    _emit_verify(args, {"valid": res.valid, "reason": res.reason, "client_id": res.client_id,
                        "request_id": res.request_id, "proofs": res.n_proofs, "bound_units": res.bound_units,
                        "insecure_srs": res.insecure_srs, "details": res.details, "warnings": warnings})
    return EXIT_VALID if res.valid else EXIT_REJECTED


def _emit_verify(args, d):
    if args.json:
        _say(json.dumps(d))
    elif d.get("malformed"):
        print(f"MALFORMED: {d['reason']}", file=sys.stderr, flush=True)
    else:
        _say(f"client {d['client_id']!r} ({ascii(d['client_id'])}), request {d['request_id']!r} "
             f"({ascii(d['request_id'])})")
        _say(("VALID: " if d["valid"] else "REJECTED: ") + d["reason"])
        for w in d.get("warnings", []):
            _say(f"NOTE: {w}")
        if d.get("insecure_srs"):
            _say("WARNING: the SRS was generated locally — INSECURE, test only")


# ----------------------------------------------------------------------------- demo

def demo_story(acc: dict, *, fraction: float = 0.04, min_effect: float = 0.02) -> list[str]:
    """Plain-language reading of the demo's accuracy table: did the mask forget, did the
    certified update keep the forgetting and recover the client's accuracy — or why not.
    ``acc``: {"global"|"personalized"|"mask_only"|"certified": {"personal_acc", "forget_acc", ...}}."""
    g, p, m, c = (acc[k] for k in ("global", "personalized", "mask_only", "certified"))
    lines = []
    if p["forget_acc"] < min_effect or p["forget_acc"] < g["forget_acc"] - 0.5:
        lines.append(f"no forgetting to show: the personalized model already fails the forget classes "
                     f"(forget accuracy {p['forget_acc']:.3f}, global model {g['forget_acc']:.3f}) — "
                     "personalization overwrote them before any deletion request")
    drop = p["forget_acc"] - m["forget_acc"]
    if drop >= min_effect:
        lines.append(f"the mask forgets: forget accuracy {p['forget_acc']:.3f} → {m['forget_acc']:.3f} (mask only)")
    else:
        lines.append(f"this run did not forget: the mask moves forget accuracy by {drop:+.3f} "
                     f"({p['forget_acc']:.3f} → {m['forget_acc']:.3f}): {fraction:.0%} of the masked kernels of a small "
                     "model removes too little of what the forget classes use (docs/RESULTS.md explains why)")
    kept = p["forget_acc"] - c["forget_acc"]
    if drop >= min_effect:
        lines.append(f"the certified update keeps {kept / drop:.0%} of that forgetting "
                     f"(forget accuracy {c['forget_acc']:.3f})" if kept > 0 else
                     f"the certified update undoes the forgetting (forget accuracy back to {c['forget_acc']:.3f}): "
                     "the compensation rebuilds the removed weights' effect on the forget inputs")
    cost = p["personal_acc"] - m["personal_acc"]
    if cost >= min_effect:
        lines.append(f"the mask costs the client {cost:.3f} personal accuracy; the certified update recovers "
                     f"{(c['personal_acc'] - m['personal_acc']) / cost:.0%} of it")
    else:
        lines.append(f"the mask costs the client {cost:+.3f} personal accuracy: nothing to recover")
    return lines


def _validate_demo(model, block_size, pattern, logrows, quick):
    """Everything the demo's arguments must satisfy, checked on parameter shapes (no training)."""
    from .studies import image as pl
    from .models import param_shapes
    from .protocol import CommitSpec

    cfg = (pl.PipelineConfig.tiny(model=model if model != "vit-demo" else "vit-test", block_size=block_size)
           if quick else pl.PipelineConfig(model=model, block_size=block_size))
    if pattern:
        cfg = cfg.replace(mask_pattern=pattern)
    try:
        shapes = param_shapes(cfg.model)
    except (KeyError, ValueError) as e:
        raise ZkapexError(f"--model {model!r}: {e}") from None
    pl.block_layout(cfg, shapes)  # pattern matches kernels, B divides them (ShapeError/UnknownParameterError)
    if logrows is not None:
        CommitSpec(block_size=block_size, logrows=logrows)


def run_demo(out, *, model="vit-demo", block_size=16, logrows=None, jobs=2, seed=0, quick=False,
             pattern=None, cache=None, srs=None, executor="ray"):
    """The whole protocol end to end; returns the summary dict (also written to out/summary.json)."""
    import jax

    from .studies import image as pl
    from .core.params import set_paths
    from .protocol import (KeyStore, commit_personalization, prove_witness, save_commitment,
                           unlearn_committed, verify_bundle)
    from .protocol.statement import plan_proofs
    from .protocol.binding import Opening
    from .models.train import save_checkpoint

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"model": model, "block_size": block_size, "jobs": jobs, "executor": executor}
    times = summary.setdefault("seconds", {})

    def stage(name):
        class _T:
            def __enter__(self_):
                _say(f"[{name}] …")
                self_.t = time.perf_counter()

            def __exit__(self_, *a):
                times[name] = round(time.perf_counter() - self_.t, 2)
                _say(f"[{name}] done in {times[name]:.1f} s")
        return _T()

    if quick:
        cfg = pl.PipelineConfig.tiny(model=model if model != "vit-demo" else "vit-test", block_size=block_size)
    else:
        cfg = pl.PipelineConfig(model=model, block_size=block_size, global_epochs=6, max_test=2000,
                                n_mask_forget=256, n_mask_retain=256)
    if pattern:
        cfg = cfg.replace(mask_pattern=pattern)
    k_glob, k_pers = jax.random.split(jax.random.PRNGKey(seed))
    with stage("data"):
        data = pl.load_data(cfg, seed)
    with stage("provider: train global model"):
        theta_g, _ = pl.train_global(cfg, data, key=k_glob)
        save_checkpoint(out / "global", theta_g, {"model": cfg.model})
    with stage("client: personalize"):
        theta_p, _ = pl.personalize(cfg, theta_g, data, key=k_pers)
        save_checkpoint(out / "personalized", theta_p, {"model": cfg.model})
    layout = pl.block_layout(cfg, theta_p)
    with stage("client: Fisher"):
        fisher = np.asarray(pl.client_fisher(cfg, theta_p, data, layout), dtype=np.float64)
        save_fisher(out / "fisher.npz", fisher, layout)
    client_ks = KeyStore(cache, srs_path=srs)
    provider_ks = KeyStore(out / "provider-keys", srs_path=srs)
    with stage("client: commit"):
        cs = _commit_spec(block_size, logrows, client_ks)
        tb = theta_blocks(theta_p, layout)
        com, sec = commit_personalization(tb, fisher, cs, client_id="client-0", keystore=client_ks,
                                          layout=layout.to_dict(), progress=True, rest=rest_of(theta_p, layout))
        com = save_commitment(out / "commitment.npz", com, sec, out / "commitment-secrets.npz")
    with stage("provider: mask"):
        mask = pl.provider_mask(cfg, theta_g, data, seed=seed)
        mask.save(out / "mask.json")
        mb, mask_sha = load_mask(out / "mask.json", layout)
    with stage("client: Group-OBS (float) and certified update"):
        theta_u_float, info = pl.unlearn(theta_p, fisher, mask, layout)
        u = unlearn_committed(tb, fisher, mb, com, sec, keystore=client_ks)
        leaves = _leaves(theta_p, layout)
        theta_u = set_paths(theta_p, {p: np.asarray(v, dtype=np.asarray(l).dtype)
                                      for (p, v), l in zip(layout.from_blocks(u.theta_u).items(), leaves)})
        save_checkpoint(out / "unlearned", theta_u, {"commitment_sha256": com.sha256})
    with stage("client: prove"):
        bundle = prove_witness(u, com, sec, request_id="request-0", out_dir=out / "bundle", keystore=client_ks,
                               jobs=jobs, progress=True, executor=executor, mask_sha256=mask_sha,
                               opening_out=out / "opening.npz")
    with stage("provider: keys"):
        for spec, _ in plan_proofs(mb, cs, root=provider_ks.root):
            provider_ks.ensure(spec)
    with stage("provider: verify"):
        deployed = _load_params(out / "unlearned")  # the checkpoint as written: the whole model is checked
        res = verify_bundle(bundle, com, mb, keystore=provider_ks, client_id="client-0", request_id="request-0",
                            mask_sha256=mask_sha, deployed=(theta_blocks(deployed, layout), rest_of(deployed, layout),
                                                            Opening.load(out / "opening.npz")))
    with stage("evaluate"):
        accs = {name: pl.evaluate(cfg, p, data, mia=False) for name, p in
                (("global", theta_g), ("personalized", theta_p), ("mask_only", pl.mask_only(theta_p, mask)),
                 ("group_obs_float", theta_u_float), ("certified", theta_u))}
    st = json.loads((bundle / "statement.json").read_text())
    proof_bytes = sum((bundle / c["proof"]).stat().st_size for c in st["proofs"])
    raw_bytes = sum(len(json.loads((bundle / c["proof"]).read_text())["proof"]) for c in st["proofs"])
    com_bytes = Path(com.path).stat().st_size
    dev = np.abs(np.asarray(u.theta_u) - np.asarray(theta_blocks(theta_u_float, layout)))
    summary.update({
        "valid": res.valid, "reason": res.reason, "insecure_srs": res.insecure_srs,
        "blocks": layout.num_blocks, "masked_blocks": len(u.witnesses), "proofs": len(st["proofs"]),
        "masked_weights": int((mb == 1).sum()), "params_certified": int(layout.num_blocks * block_size),
        "logrows": cs.logrows, "buckets": sorted({(s.kmax, s.chunk_blocks) for s, _ in u.plan}),
        "bound_units": res.bound_units, "theta_unit": 2.0 ** -com.theta_exp,
        "max_dev_certified_vs_float": float(dev.max()), "commitment_bytes": com_bytes,
        "proof_file_bytes": proof_bytes, "proof_bytes": raw_bytes, "prover": st["prover"],
        "float_max_residual": info["max_residual"],
        "accuracy": {k: {m: round(v[m], 4) for m in ("personal_acc", "personal_acc_orig", "personal_acc_shift",
                                                    "forget_acc", "other_acc")} for k, v in accs.items()},
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _say("")
    _say(f"{'model':<18}{'personal':>10}{'orig':>8}{'shift':>8}{'forget':>8}{'other':>8}")
    for k, v in summary["accuracy"].items():
        _say(f"{k:<18}{v['personal_acc']:>10.3f}{v['personal_acc_orig']:>8.3f}{v['personal_acc_shift']:>8.3f}"
             f"{v['forget_acc']:>8.3f}{v['other_acc']:>8.3f}")
    summary["story"] = demo_story(summary["accuracy"], fraction=cfg.mask_fraction)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for line in summary["story"]:
        _say(line)
    p = summary["prover"]
    _say(f"\nstatement: {summary['blocks']} blocks × {block_size} = {summary['params_certified']} parameters, "
         f"{summary['masked_weights']} masked in {summary['masked_blocks']} blocks → {summary['proofs']} proofs "
         f"(logrows {cs.logrows}, buckets (kmax, blocks/proof) {summary['buckets']})")
    _say(f"proof: prove {p['prove_s']:.1f} s summed / {p['wall_s']:.1f} s wall with {jobs} jobs, witness "
         f"{p['witness_s']:.1f} s, proofs {raw_bytes / 1e3:.1f} kB ({proof_bytes / 1e3:.1f} kB JSON), commitment "
         f"{com_bytes / 1e3:.1f} kB; θu certified within {res.bound_units:.3f} units of 2^-{com.theta_exp}")
    _say(("VALID: " if res.valid else "REJECTED: ") + res.reason)
    return summary


def _cmd_demo(args) -> int:
    model, B = ("vit-tiny", 16) if args.big else (args.model, args.block_size)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ZkapexError(f"--out {out} exists and is not an empty directory; choose a new one")
    _check_srs(args)
    _validate_demo(model, B, args.pattern, args.logrows, args.quick)
    s = run_demo(args.out, model=model, block_size=B, logrows=args.logrows, jobs=args.jobs, seed=args.seed,
                 quick=args.quick, pattern=args.pattern, cache=args.cache, srs=args.srs, executor=args.executor)
    return EXIT_VALID if s["valid"] else EXIT_REJECTED


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zkapex", description="Verifiable personalized unlearning (ZK-APEX).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, keystore=False):
        p.add_argument("--cache", type=_path, default=None, help="key/SRS cache (default $ZKAPEX_CACHE or ~/.cache/zkapex)")
        p.add_argument("--srs", type=_file, default=None, help="ceremony SRS file (default: local, INSECURE)")
        if keystore:
            p.add_argument("--keystore", type=_path, default=None, help="the provider's own key store (default: the cache)")

    p = sub.add_parser("keys", help="[provider] compile and key a circuit shape in the key store")
    p.add_argument("--block-size", type=BLOCK, required=True, help="weights per block B")
    p.add_argument("--logrows", type=LOGROWS, default=None, help="the commitment's logrows (default: fit 32 masked/block)")
    p.add_argument("--kmax", type=POS, default=None, help="build only this bucket (default: every bucket that fits)")
    common(p, keystore=True)
    p.set_defaults(fn=cmd_keys)

    p = sub.add_parser("mask", help="[provider] score the global model and publish the mask")
    p.add_argument("--global", dest="global_ckpt", type=_path, required=True, help="the global model checkpoint")
    p.add_argument("--out", type=_file, required=True, help="the mask file to write (JSON)")
    p.add_argument("--model", default="vit-demo", type=_text,
                   help="built-in model config (vit-demo, vit-tiny, opt-tiny, ...) or a local Hugging Face model "
                        "directory (config.json + weights; default vit-demo)")
    p.add_argument("--block-size", type=BLOCK, default=16, help="weights per block B (default 16)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--data", type=_path, default=None,
                   help="the provider's labelled images (.npz with x, y or a folder of class folders); "
                        "with --forget-classes (default: the built-in Fashion-MNIST split)")
    p.add_argument("--forget-classes", default=None, help="comma-separated labels to forget, e.g. 5,7,9 (with --data)")
    p.add_argument("--forget", type=_path, default=None,
                   help="the forget set (.npz or image folder; text/code folder for an LM), with --retain")
    p.add_argument("--retain", type=_path, default=None,
                   help="the retain set (.npz or image folder; text/code folder for an LM), with --forget")
    p.add_argument("--pattern", default=None, help="kernels to mask (fnmatch pattern; default: every fc1)")
    p.add_argument("--fraction", type=_float_in(0.0, 1.0, lo_open=True), default=None,
                   help="fraction of the selected weights to mask, in (0, 1] (default: the config's)")
    p.add_argument("--protect", type=NONNEG, default=0,
                   help="the certified forget-aware request: in every block (of --block-size, the client's committed "
                        "block size) with a masked weight, also protect the R next-highest-scoring weights, which the "
                        "certified compensation may not move (default 0: the paper's plain request)")
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed (default 0)")
    p.add_argument("--tokenizer", type=_file, default=None,
                   help="a language model's tokenizer (zkapex code tokenizer JSON); its data are text/code folders")
    p.add_argument("--seq-len", type=POS, default=64, help="a language model's sequence length (default 64)")
    p.set_defaults(fn=cmd_mask)

    p = sub.add_parser("fisher", help="[client] block-wise Fisher of the personalized model")
    p.add_argument("--params", type=_path, required=True, help="the personalized checkpoint")
    p.add_argument("--out", type=_file, required=True, help="the Fisher file to write (.npz)")
    p.add_argument("--model", default="vit-demo", type=_text,
                   help="built-in model config (vit-demo, vit-tiny, opt-tiny, ...) or a local Hugging Face model "
                        "directory (config.json + weights; default vit-demo)")
    p.add_argument("--block-size", type=BLOCK, default=16, help="weights per block B (default 16)")
    p.add_argument("--damping", type=_float_in(0.0), default=None, help="Fisher damping ≥ 0 (default: the config's)")
    p.add_argument("--relative-damping", action="store_true",
                   help="--damping is a multiple of each block's mean diagonal (floored at the whole curvature's)")
    p.add_argument("--curvature", choices=("empirical", "true", "exact", "layer_inputs"), default="empirical",
                   help="the curvature family: the paper's empirical Fisher (default), the true Fisher (sampled "
                        "labels), the exact Fisher / Gauss-Newton, or the layer-input second moment XXᵀ of OBC")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--data", type=_path, default=None,
                   help="the client's labelled images (.npz with x, y or a folder of class folders), or text/code "
                        "files for an LM (default: the built-in personalization split)")
    p.add_argument("--pattern", default=None, help="kernels to cover (fnmatch pattern; default: every fc1)")
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed (default 0)")
    p.add_argument("--tokenizer", type=_file, default=None,
                   help="a language model's tokenizer (zkapex code tokenizer JSON); its data are text/code folders")
    p.add_argument("--seq-len", type=POS, default=64, help="a language model's sequence length (default 64)")
    p.set_defaults(fn=cmd_fisher)

    p = sub.add_parser("personalize", help="[client] fine-tune the global model on the client's images")
    p.add_argument("--global", dest="global_ckpt", type=_path, required=True, help="the global model checkpoint")
    p.add_argument("--out", type=_path, required=True, help="the personalized checkpoint to write")
    p.add_argument("--data", type=_path, default=None,
                   help="the client's labelled images (.npz with x, y or a folder of class folders), or text/code "
                        "files for an LM (default: the built-in personalization split)")
    p.add_argument("--model", default="vit-demo", type=_text,
                   help="built-in model config (vit-demo, vit-tiny, opt-tiny, ...) or a local Hugging Face model "
                        "directory (config.json + weights; default vit-demo)")
    p.add_argument("--epochs", type=POS, default=None, help="epochs (default: the paper's 30)")
    p.add_argument("--lr", type=_float_in(0.0, 1.0, lo_open=True), default=None, help="AdamW peak lr (default 8e-4)")
    p.add_argument("--layer-decay", type=_float_in(0.0, 1.0, lo_open=True), default=None,
                   help="layer-wise lr decay (default 0.8)")
    p.add_argument("--batch", type=POS, default=None, help="batch size (default 16)")
    p.add_argument("--block-size", type=BLOCK, default=16, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--tokenizer", type=_file, default=None,
                   help="a language model's tokenizer (zkapex code tokenizer JSON); its data are text/code folders")
    p.add_argument("--seq-len", type=POS, default=64, help="a language model's sequence length (default 64)")
    p.set_defaults(fn=cmd_personalize)

    p = sub.add_parser("commit", help="[client] commit to θp and C (before any mask)")
    p.add_argument("--params", type=_path, required=True, help="the personalized checkpoint θp")
    p.add_argument("--fisher", type=_file, required=True, help="the Fisher file from `zkapex fisher`")
    p.add_argument("--client-id", type=_text, required=True, help="the client's public identifier")
    p.add_argument("--out", type=_file, required=True, help="the public commitment to write (.npz)")
    p.add_argument("--secrets", type=_file, required=True, help="the client's private blinders (never publish)")
    p.add_argument("--logrows", type=LOGROWS, default=None, help="circuit size fixed at commitment (default: auto)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    common(p)
    p.set_defaults(fn=cmd_commit)

    for name, fn, hlp in (("unlearn", cmd_unlearn, "[client] the certified Group-OBS update → checkpoint"),
                          ("prove", cmd_prove, "[client] prove the unlearning → bundle directory")):
        p = sub.add_parser(name, help=hlp)
        for a, h in (("--params", "the personalized checkpoint θp"),
                     ("--fisher", "the Fisher file (optional: the secrets carry the committed inverse; needed only "
                                  "for secrets written by zkapex < 0.3)"),
                     ("--commitment", "the published commitment"), ("--secrets", "the commitment's secrets"),
                     ("--mask", "the provider's mask file"),
                     ("--out", "the unlearned checkpoint to write" if name == "unlearn" else "the bundle directory to create")):
            p.add_argument(a, type=_file if a in ("--fisher", "--commitment", "--secrets", "--mask") else _path,
                           required=a != "--fisher", default=None, help=h)
        if name == "prove":
            p.add_argument("--request-id", type=_text, required=True, help="the deletion request's identifier")
            p.add_argument("--jobs", type=POS, default=1, help="parallel prover processes / local Ray workers")
            p.add_argument("--executor", choices=("ray", "process"), default="ray",
                           help="Ray (default: a local instance with --jobs CPUs, or the cluster at --ray-address), "
                                "or a local process pool")
            p.add_argument("--ray-address", default=None, help="an existing Ray cluster (e.g. auto, ray://host:10001)")
            p.add_argument("--unlearned", type=_path, default=None,
                           help="certify this unlearned checkpoint (fails, exit 1, if it is not the certified update "
                                "or any parameter outside the statement differs from --params)")
            p.add_argument("--opening", type=_file, default=None,
                           help="also write the deployment opening (Com(θu) blinders, rest salt): lets whoever gets "
                                "the deployed model check all of it with `zkapex verify --deployed`")
            p.add_argument("--force", action="store_true", help="replace an existing --opening")
        else:
            p.add_argument("--force", action="store_true", help="replace an existing output checkpoint")
        common(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("verify", help="[provider] verify a bundle (exit 0 valid, 1 rejected, 2 malformed)")
    p.add_argument("bundle", type=_path, help="the bundle directory from `zkapex prove`")
    p.add_argument("--commitment", type=_file, required=True, help="the published commitment")
    p.add_argument("--mask", type=_file, required=True, help="the published mask")
    p.add_argument("--client-id", type=_text, default=None, help="require this client id")
    p.add_argument("--request-id", type=_text, default=None, help="require this request id")
    p.add_argument("--deployed", type=_path, default=None,
                   help="the deployed (unlearned) checkpoint: check that every parameter is the certified one")
    p.add_argument("--opening", type=_file, default=None, help="the deployment opening from `zkapex prove --opening`")
    p.add_argument("--json", action="store_true", help="one JSON line instead of text")
    common(p, keystore=True)
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("demo", help="the whole protocol on Fashion-MNIST (vit-demo, ~4 min on 2 cores)")
    p.add_argument("--out", type=_path, required=True, help="a new (or empty) output directory")
    p.add_argument("--big", action="store_true", help="a bigger statement: vit-tiny fc1 (65,536 parameters)")
    p.add_argument("--model", default="vit-demo", type=_text,
                   help="built-in model config (vit-demo, vit-tiny, opt-tiny, ...) or a local Hugging Face model "
                        "directory (config.json + weights; default vit-demo)")
    p.add_argument("--block-size", type=BLOCK, default=16, help="weights per block B (default 16)")
    p.add_argument("--logrows", type=LOGROWS, default=None, help="the commitment's circuit size (default: auto)")
    p.add_argument("--executor", choices=("ray", "process"), default="ray",
                   help="how proofs run in parallel: a local Ray instance (default) or a process pool")
    p.add_argument("--pattern", default=None, help="restrict the statement to kernels matching this pattern")
    p.add_argument("--quick", action="store_true", help="tiny training settings (tests)")
    p.add_argument("--jobs", type=POS, default=2, help="parallel provers (default 2)")
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed (default 0)")
    common(p)
    p.set_defaults(fn=_cmd_demo)
    return ap


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    except SystemExit as e:  # argparse: usage errors (exit 2, message on stderr) and --help (0)
        return e.code if isinstance(e.code, int) else EXIT_MALFORMED
    if getattr(args, "cache", None):
        os.environ["ZKAPEX_CACHE"] = str(args.cache)
    if args.cmd == "verify":
        return args.fn(args)
    from .protocol.prover import ProofError

    _load_hf_dir.cache_clear()  # one command = one load; never stale across calls in one process

    try:
        return int(args.fn(args) or 0)
    except ProofError as e:  # the model is not the certified update / openings do not match
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_REJECTED
    except (ValueError, OSError) as e:  # ZkapexError is a ValueError; unreadable/unwritable paths
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_MALFORMED
    except RuntimeError as e:  # an ezkl stage failed (circuits.stages.EzklError)
        print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
