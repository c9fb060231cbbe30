"""What the ``zkapex`` verbs read: models (built-in configs, zkapex checkpoints, Hugging Face
directories), the user's data (image folders / ``.npz``, text and code folders), the key store,
the client's committed artifacts — each checked up front, every problem a :class:`ZkapexError`
naming it (exit 2) — and the outputs' refusal rules (nothing replaced without ``--force``, a user's
folder never)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .._errors import ZkapexError
from ._args import _say


def check_srs(args):
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


def keystore_of(args, attr="cache"):
    from ..protocol import KeyStore

    check_srs(args)
    return KeyStore(getattr(args, attr, None), srs_path=getattr(args, "srs", None))


def is_hf_dir(path) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


@functools.lru_cache(maxsize=2)
def load_hf_dir(path):
    """``(model, params)`` of a Hugging Face directory, loaded once per command even when
    ``--model`` and ``--params`` name the same one (the cache is cleared at the start of every
    :func:`main`)."""
    from ..models import load_pretrained

    return load_pretrained(path)


def load_params(path):
    """Parameters from a zkapex checkpoint or a local Hugging Face model directory."""
    from ..models.train import load_checkpoint

    if is_hf_dir(path):
        return load_hf_dir(os.path.realpath(path))[1]
    return load_checkpoint(path)[0]


def tokenizer_of(args):
    from ..data.code import CodeTokenizer

    if not getattr(args, "tokenizer", None):
        return None
    return CodeTokenizer.load(args.tokenizer)


def native_models() -> dict:
    """Built-in families that are not transformers configs: name -> the overrides the CLI builds
    them with (EfficientNet-Lite0: the pretrained image study's 64 px, 10-class, frozen-stem setting)."""
    from ..models.efficientnet import SMALL_INPUT

    return {"efficientnet-lite0": SMALL_INPUT}


def family_of(args):
    """The model family of --model: a built-in config name, a built-in native family
    (:func:`native_models`) or a local Hugging Face directory. A causal LM needs --tokenizer (its
    vocabulary sets the model's)."""
    from ..models import MODEL_CONFIGS, family, family_of_model, make_config

    native = native_models()
    if is_hf_dir(args.model):
        fam = family_of_model(load_hf_dir(os.path.realpath(args.model))[0])
    elif args.model in native:
        fam = family(args.model, **dict(native[args.model]))
    elif args.model in MODEL_CONFIGS:
        lm = not hasattr(make_config(args.model), "image_size")
        tok = tokenizer_of(args)
        if lm and tok is None:
            raise ZkapexError(f"--model {args.model!r} is a language model: give --tokenizer (a zkapex "
                              "code tokenizer JSON) so its data folders can be tokenized")
        fam = family(args.model, vocab_size=tok.vocab_size) if lm else family(args.model)
    else:
        raise ZkapexError(f"--model {args.model!r}: neither a built-in config ({', '.join(sorted([*MODEL_CONFIGS, *native]))}) "
                          "nor a Hugging Face model directory (config.json + weights)")
    if fam.kind == "lm":
        if getattr(args, "tokenizer", None) is None:
            raise ZkapexError("a language model needs --tokenizer")
        if args.seq_len > fam.config.max_position_embeddings:
            raise ZkapexError(f"--seq-len {args.seq_len} exceeds the model's {fam.config.max_position_embeddings} "
                              "positions")
    return fam


def builtin_image(args) -> bool:
    from ..models import MODEL_CONFIGS

    return (args.model in MODEL_CONFIGS or args.model in native_models()) and not is_hf_dir(args.model)


def check_model_ckpt(fam, params, path):
    """The checkpoint's parameter shapes must be the model's (no JAX shape errors later)."""
    from ..core.params import flatten_params

    try:
        want = {p: tuple(v.shape) for p, v in flatten_params(fam.param_shapes()).items()}
    except (KeyError, ValueError) as e:
        raise ZkapexError(f"--model {fam.name!r}: {e}") from None
    got = {p: tuple(np.shape(v)) for p, v in flatten_params(params).items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise ZkapexError(f"{path}: checkpoint does not match --model {fam.name!r} (e.g. {diff}); "
                          "pass the --model it was trained with")


def load_client(args):
    """The client's committed artifacts for ``unlearn`` / ``prove``: ``(commitment, secrets,
    curvature or None, params, mask)``, each checked against the commitment (layout, the whole
    model) before any work."""
    from ..core.mask import Mask
    from ..protocol import load_commitment, load_secrets
    from ..protocol.api import Curvature, commitment_layout, rest_of
    from ..protocol.prover import ProofError, check_rest

    com = load_commitment(args.commitment)
    sec = load_secrets(args.secrets, com)
    try:
        layout = commitment_layout(com)
    except ValueError as e:
        raise ZkapexError(f"{e}: pass --fisher") from None
    curvature = None
    if args.fisher is not None:
        curvature = Curvature.load(args.fisher)
        if curvature.layout.to_dict() != com.layout:
            raise ZkapexError(f"{args.fisher}: block layout differs from the commitment's")
    elif sec.inverse_q is None:  # otherwise the secrets carry the committed Â (computed once at commit time)
        raise ZkapexError(f"{args.secrets}: these secrets do not carry the committed inverse Fisher "
                          "(written by an older zkapex): pass --fisher")
    params = load_params(args.params)
    try:  # the personalized checkpoint must be the committed one, outside the statement too
        check_rest(com, sec, rest_of(params, layout))
    except ProofError as e:
        raise ZkapexError(f"{args.params}: not the committed personalized model ({e})") from None
    return com, sec, curvature, params, Mask.load(args.mask)


def study_config(args, fam=None):
    """The image study's :class:`~zkapex_jax.studies.image.PipelineConfig` for ``--model`` (its
    built-in data and its stage defaults); the mask pattern is the family's (fc1 of every layer,
    EfficientNet's expansion convs). The verbs' flags are applied by :func:`stage_config`."""
    from ..studies.image import PipelineConfig

    kw = dict(model=args.model, block_size=args.block_size)
    if args.model in native_models():
        kw["model_overrides"] = tuple(native_models()[args.model])
    if fam is not None:
        kw["mask_pattern"] = fam.mask_patterns if len(fam.mask_patterns) > 1 else fam.mask_patterns[0]
    return PipelineConfig(**kw)


def stage_config(args, fam, n_train: int = 1):
    """The stages' settings (:class:`~zkapex_jax.protocol.config.StageConfig`) for ``--model``'s
    family with the verb's flags applied: the image study's defaults for an image classifier, the
    code study's (its mask scores, curvature and AdamW recipe; the family's fc1 kernels as the
    statement) for a language model. ``n_train``: the training examples of the verb that trains
    (the code study's recipes are step counts)."""
    if fam.kind == "lm":
        from ..studies.opt_code import OptCodeConfig

        st = OptCodeConfig(name="cli").stages(n_train, n_train).replace(mask__patterns=None)
    else:
        st = study_config(args, fam).stages()
    kw = {"curvature__block_size": args.block_size}
    if getattr(args, "pattern", None):
        kw["mask__patterns"] = (args.pattern,)
    if getattr(args, "fraction", None) is not None:
        kw["mask__fraction"] = args.fraction
    if getattr(args, "protect", 0):
        kw["mask__protect"] = args.protect
    if getattr(args, "curvature", None):
        kw["curvature__kind"] = args.curvature
    if getattr(args, "damping", None) is not None:
        kw["curvature__damping"] = args.damping
    if getattr(args, "relative_damping", False):
        kw["curvature__relative"] = True
    recipe = "global_recipe" if args.cmd == "train" else "personal_recipe"
    for flag, field in (("epochs", "epochs"), ("lr", "lr"), ("batch", "batch"), ("layer_decay", "layer_decay")):
        if getattr(args, flag, None) is not None:
            kw[f"{recipe}__{field}"] = getattr(args, flag)
    return st.replace(**kw)


def model_io(fam):
    """(image (H, W, C), num_labels) of an image classifier."""
    c = fam.config
    return (int(c.image_size), int(c.image_size), int(c.num_channels)), int(c.num_labels)


def user_split(fam, path, what, min_examples=1, args=None):
    """The user's data for ``fam``: a ``Split`` of images, or ``(n, T)`` token rows for an LM."""
    if fam.kind == "lm":
        from ..data.files import load_token_sequences

        rows = load_token_sequences(path, tokenizer_of(args), args.seq_len, min_sequences=min_examples)
        _say(f"{what}: {rows.shape[0]} sequences of {rows.shape[1]} tokens from {path}")
        return rows
    from ..data.files import load_labelled

    shape, k = model_io(fam)
    split, mapping = load_labelled(path, image_shape=shape, num_labels=k, min_examples=min_examples)
    cls = np.unique(split.y).tolist()
    _say(f"{what}: {split.n} images of {len(cls)} classes {cls} from {path}"
         + (f" (folders → labels {mapping})" if mapping else ""))
    if fam.prepare is not None:  # the family's inputs, e.g. through a frozen pretrained stem
        split = type(split)(fam.prepare(split.x), split.y)
    return split


def as_data(fam, split):
    return split if fam.kind == "lm" else (split.x, split.y)


def n_examples(split) -> int:
    return int(split.shape[0]) if isinstance(split, np.ndarray) else split.n


def subsample(split, n, seed):
    from ..studies.image import _subsample as sub_split

    if isinstance(split, np.ndarray):
        if n is None or n >= split.shape[0]:
            return split
        return split[np.sort(np.random.default_rng(seed).choice(split.shape[0], size=n, replace=False))]
    return sub_split(split, n, seed)


def provider_splits(args, fam):
    """(forget, retain, meta) from --forget/--retain, or --data split by --forget-classes;
    None: the built-in split."""
    from ..data.files import parse_classes, select_classes

    if args.forget or args.retain:
        if not (args.forget and args.retain) or args.data:
            raise ZkapexError("give --forget and --retain together (or --data with --forget-classes)")
        forget = user_split(fam, args.forget, "forget", args=args)
        retain = user_split(fam, args.retain, "retain", args=args)
        return forget, retain, {"forget_classes": None, "forget_data": os.path.basename(os.path.normpath(args.forget)),
                                "retain_data": os.path.basename(os.path.normpath(args.retain))}
    if args.data:
        if fam.kind == "lm":
            raise ZkapexError("a language model's forget set is a folder: give --forget and --retain")
        if not args.forget_classes:
            raise ZkapexError("--data needs --forget-classes (e.g. --forget-classes 5,7,9)")
        split = user_split(fam, args.data, "data")
        classes = parse_classes(args.forget_classes, model_io(fam)[1])
        forget, retain = select_classes(split, classes), select_classes(split, classes, keep=False)
        if forget.n == 0 or retain.n == 0:
            raise ZkapexError(f"{args.data}: the forget classes {list(classes)} leave "
                              f"{forget.n} forget and {retain.n} retain images; both must be non-empty")
        return forget, retain, {"forget_classes": sorted(int(c) for c in classes),
                                "data": os.path.basename(os.path.normpath(args.data))}
    if args.forget_classes:
        raise ZkapexError("--forget-classes needs --data")
    if not builtin_image(args) or fam.kind != "classifier":
        raise ZkapexError(f"--model {args.model!r} has no built-in data: give --forget and --retain"
                          + (" (text/code folders)" if fam.kind == "lm" else " (or --data with --forget-classes)"))
    return None


def data_or_builtin(args, fam, what, min_examples=1, builtin="personal_train"):
    """--data, or the built-in Fashion-MNIST split ``builtin`` (``personal_train`` for the client,
    ``global_train`` for the provider; built-in image models only)."""
    if args.data:
        return user_split(fam, args.data, what, min_examples=min_examples, args=args)
    if not builtin_image(args) or fam.kind != "classifier":
        raise ZkapexError(f"--model {args.model!r} has no built-in data: give --data"
                          + (" (a text/code file or folder)" if fam.kind == "lm" else ""))
    from ..studies import image as pl

    return getattr(pl.load_data(study_config(args, fam), args.seed), builtin)


def model_and_params(args, path):
    """``(family, params)`` of the verbs that read a model: ``--model`` and the parameters at
    ``path`` checked against the model's shapes."""
    fam = family_of(args)
    params = load_params(path)
    check_model_ckpt(fam, params, path)
    return fam, params


def refuse_outputs(*paths, force=False, checkpoint=False):
    """Outputs must differ from each other, and exist only with --force; a ``checkpoint`` output
    that exists must be a zkapex checkpoint (a user's folder is never replaced), checked before
    any work."""
    from ..models.train import _is_checkpoint_dir

    rp = [Path(p).resolve() for p in paths]
    if len(set(rp)) != len(rp):
        raise ZkapexError(f"output paths must differ: {', '.join(str(p) for p in paths)}")
    for p in paths:
        if Path(p).exists() and not force:
            raise ZkapexError(f"{p} exists; pass --force to replace it")
        if checkpoint and os.path.lexists(p) and not _is_checkpoint_dir(p):
            raise ZkapexError(f"{p} exists and is not a zkapex checkpoint; refusing to replace it")
