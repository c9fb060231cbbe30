"""Study 2 — the code language model (the paper's OPT-125M / CodeParrot study, on local code).

The entry point with its command line is ``experiments/opt_code.py``; the named configs are in
``experiments/configs/opt_code.py``. Progress goes to the ``zkapex_jax.studies`` logger.

Per seed: the provider trains a global ``FlaxOPTForCausalLM`` on C, C++, Python and JavaScript;
the client personalizes it on Rust (a LoRA on the attention and FFN projections, merged: θp); the
provider unlearns JavaScript: it scores the fc1+fc2 kernels of every layer on its global model
(second-order-neg, forget = JavaScript, retain = the other global languages) and publishes the
global top-4% mask M; the client computes the block-wise Fisher of θp on its Rust data and applies
Group-OBS (θu = θp + δ, θu[M] = 0). Methods: ``personalized`` (θp), ``mask_only`` (θp, θp[M] = 0),
``zkapex`` (θu), ``retrain`` (global model trained without JavaScript, then personalized the same
way) and the baselines of :mod:`zkapex_jax.studies.baselines` (fine-tune after mask, gradient ascent, SSD,
SalUn). Metrics: next-token top-1 accuracy on held-out Rust (``personal_acc``), JavaScript
(``forget_acc``) and the other global languages (``retain_acc``); recovery =
(zkapex − mask_only) / (personalized − mask_only) on ``personal_acc``. Sweeps on the first seed
(mask fraction, Fisher block size, damping, number of Fisher samples) reuse that seed's models.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from ..core.blocks import BlockLayout
from ..core.curvature import damp
from ..data import code as cd
from ..models import Family, LoRAConfig, family
from ..models import train as T
from ..models.train import steps_per_epoch
from ..protocol import client, provider
from ..protocol.config import CurvatureSpec, MaskSpec, StageConfig
from ..protocol.provider import Recipe
from . import baselines as bl
from . import seed as S
from .metrics import recovery as recovery_of
from .report import aggregate, load_results, markdown_table, mean_std, plot_sweep, save_figure, write_results

STUDY = "opt_code"
PAPER = {"recovery": 0.70, "model": "OPT-125M", "data": "CodeParrot C++/C/Scala/Java; LoRA on Rust; forget Scala"}


_LOG = logging.getLogger("zkapex_jax.studies")


def log(msg: str) -> None:
    _LOG.info(msg)


@dataclass(frozen=True)
class OptCodeConfig:
    name: str
    # ---- data
    global_languages: tuple[str, ...] = ("c", "cpp", "python", "javascript")
    forget_language: str = "javascript"
    personal_language: str = "rust"
    max_bytes: dict = field(default_factory=lambda: {"train": 1_000_000, "val": 100_000, "test": 150_000})
    max_file_bytes: int = 32_768
    tokenizer: str = "bpe"  # "bpe" (byte-level, trained locally) or "bytes"
    vocab_size: int = 2048
    seq_len: int = 64
    n_eval: int = 256  # test sequences of the personal and forget languages for the accuracies
    n_eval_retain: int | None = None  # test sequences of each retained language (None: n_eval)
    n_personal_train: int = 1024  # the client's Rust training sequences (personalization + Fisher pool)
    # ---- model
    model: str = "opt-tiny"
    model_overrides: dict = field(default_factory=lambda: {"num_hidden_layers": 2})
    # ---- provider training (global model and the retrain baseline)
    global_steps: int = 400
    global_batch: int = 32
    global_lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    # None: every study seed trains its own provider models (global and retrain). An int: the
    # provider's models are trained once with this seed and shared by every study seed, which then
    # varies the client (its Rust sample, LoRA init, Fisher sample), the mask examples and the
    # baselines — the provider ships one model; use it when a global model costs ~15 min of CPU.
    provider_seed: int | None = None
    # False: no retrain baseline (neither the provider's model without the forget language nor its
    # personalization): recovery and forget accuracy are measured, forget progress is not — for a
    # re-run whose retrain row another run of the same provider config already measured
    retrain: bool = True
    # ---- client personalization
    personalize: str = "lora"  # "lora" (merged, as the paper) or "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = (
        "*/self_attn/q_proj/kernel",
        "*/self_attn/k_proj/kernel",
        "*/self_attn/v_proj/kernel",
        "*/self_attn/out_proj/kernel",
        "*/fc1/kernel",
        "*/fc2/kernel",
    )
    personal_steps: int = 160
    personal_batch: int = 32
    personal_lr: float = 2e-3
    # ---- provider mask
    mask_patterns: tuple[str, ...] = ("*/layers/*/fc1/kernel", "*/layers/*/fc2/kernel")
    mask_fraction: float = 0.04
    mask_method: str = "second_order_neg"
    mask_h: float = 0.5
    mask_r: float = 1.5
    mask_damping: float = 1e-8
    n_mask_examples: int = 128  # forget and retain sequences for the scores
    # ---- client Fisher / Group-OBS
    fisher_block: int = 128
    fisher_damping: float = 1e-6
    fisher_relative: bool = False  # fisher_damping as a multiple of each block's scale (core.curvature.damp)
    curvature: str = "empirical"   # core.curvature.CURVATURES for a language model: empirical | layer_inputs | layer_covariance
    n_fisher: int = 256
    fisher_chunk: int = 32
    # damping values to choose from on the personal language's validation sequences (personal
    # accuracy of the certified update; the test split never chooses); () keeps fisher_damping
    fisher_alphas: tuple[float, ...] = ()
    n_val: int = 256  # validation sequences of the personal language for that choice
    # ---- baselines
    baselines: tuple[str, ...] = ("finetune_after_mask", "gradient_ascent", "ssd", "salun")
    ft_steps: int = 60
    ft_lr: float = 5e-4
    ga_steps: int = 20
    ga_lr: float = 1e-3
    ga_max_loss: float = 8.0
    ssd_alpha: float = 10.0
    ssd_lambda: float = 1.0
    salun_fraction: float = 0.04
    salun_steps: int = 40
    salun_lr: float = 5e-4
    # ---- sweeps (seed 0 / first seed only; reuse that seed's models)
    sweep_fractions: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08)
    sweep_blocks: tuple[int, ...] = (32, 64, 128)
    sweep_dampings: tuple[float, ...] = (1e-8, 1e-4, 1e-2)
    sweep_n_fisher: tuple[int, ...] = (32, 128)
    eval_batch: int = 128

    def replace(self, **kw) -> "OptCodeConfig":
        return dataclasses.replace(self, **kw)

    def stages(self, n_global: int, n_personal: int) -> StageConfig:
        """These settings in the protocol's words (:class:`~zkapex_jax.protocol.config.StageConfig`),
        the step counts turned into epochs over ``n_global`` / ``n_personal`` training sequences."""
        return StageConfig(global_recipe=global_recipe(self, n_global), personal_recipe=personal_recipe(self, n_personal),
                           mask=self.mask_spec(), curvature=self.curvature_spec())

    def mask_spec(self) -> MaskSpec:
        return MaskSpec(patterns=self.mask_patterns, method=self.mask_method, fraction=self.mask_fraction, h=self.mask_h,
                        r=self.mask_r, damping=self.mask_damping, n_forget=self.n_mask_examples,
                        n_retain=self.n_mask_examples)

    def curvature_spec(self) -> CurvatureSpec:
        return CurvatureSpec(kind=self.curvature, block_size=self.fisher_block, damping=self.fisher_damping,
                             relative=self.fisher_relative, n_examples=self.n_fisher, chunk=self.fisher_chunk)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ data


def prepare_data(cfg: OptCodeConfig) -> dict:
    """Corpus, tokenizer (trained on the global languages' training split) and token sequences.

    Returns ``{"seqs": {lang: {split: (n, T) int32}}, "tokenizer": CodeTokenizer, "summary": ...}``."""
    langs = list(cfg.global_languages)
    if cfg.forget_language not in langs:
        raise ValueError(f"forget language {cfg.forget_language!r} must be one of the global languages {langs}")
    if cfg.personal_language in langs:
        raise ValueError("the personalization language must not be a global language")
    corpus = cd.load_code_corpus(
        langs + [cfg.personal_language], max_bytes=cfg.max_bytes, max_file_bytes=cfg.max_file_bytes, seed=0
    )
    if cfg.tokenizer == "bpe":
        train_texts = [t for lang in langs for t in corpus.texts[lang]["train"]]
        tok = cd.train_bpe_tokenizer(train_texts, cfg.vocab_size)
    elif cfg.tokenizer == "bytes":
        tok = cd.byte_tokenizer()
    else:
        raise ValueError(f"unknown tokenizer {cfg.tokenizer!r}")
    seqs = cd.make_lm_splits(corpus, tok, cfg.seq_len, max_sequences={"test": cfg.n_eval}, seed=0)
    for lang in seqs:
        if seqs[lang]["test"].shape[0] < cfg.n_eval:
            raise ValueError(f"{lang}: only {seqs[lang]['test'].shape[0]} test sequences, need n_eval={cfg.n_eval}")
    n_retain = cfg.n_eval if cfg.n_eval_retain is None else cfg.n_eval_retain
    for li, lang in enumerate(langs):
        test = seqs[lang]["test"]
        if lang != cfg.forget_language and test.shape[0] > n_retain:  # a seeded subset, in stream order
            seqs[lang]["test"] = test[np.sort(np.random.default_rng([1, li]).choice(test.shape[0], n_retain, replace=False))]
    return {
        "seqs": seqs,
        "tokenizer": tok,
        "corpus_summary": corpus.summary(),
        "corpus_digest": corpus.digest,
        "roots": corpus.roots,
        "sequences": {lang: {s: int(v.shape[0]) for s, v in d.items()} for lang, d in seqs.items()},
    }


def _concat_shuffled(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    x = np.concatenate(arrays, axis=0)
    return x[rng.permutation(x.shape[0])]


def _retain_sample(cfg, seqs, n, rng) -> np.ndarray:
    """n training sequences drawn evenly from the retained global languages."""
    retain = [l for l in cfg.global_languages if l != cfg.forget_language]
    per = -(-n // len(retain))
    parts = [seqs[l]["train"][rng.choice(seqs[l]["train"].shape[0], per, replace=False)] for l in retain]
    return _concat_shuffled(parts, rng)[:n]


# ------------------------------------------------------------------------------------ stages


def lm_family(cfg: OptCodeConfig, vocab_size: int) -> Family:
    """The OPT family of ``cfg`` with the tokenizer's vocabulary."""
    overrides = dict(cfg.model_overrides)
    overrides["vocab_size"] = vocab_size
    overrides.setdefault("max_position_embeddings", max(cfg.seq_len, 2))
    return family(cfg.model, **overrides)


def pair_loss(fam: Family):
    """``loss(params, (x (T,), y (T,)))``: next-token loss of inputs ``x`` against targets ``y``
    (``y == x`` is the usual LM loss); SalUn relabels ``y``."""

    def loss(params, example):
        x, y = example
        logits = fam.predict(params, jnp.asarray(x, jnp.int32)[None])[0, :-1]
        tgt = jnp.asarray(y, jnp.int32)[1:]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tgt[:, None], axis=-1))

    return loss


def global_recipe(cfg: OptCodeConfig, n: int) -> Recipe:
    epochs = max(1, round(cfg.global_steps / steps_per_epoch(n, cfg.global_batch)))
    total = epochs * steps_per_epoch(n, cfg.global_batch)
    return Recipe(epochs=epochs, lr=cfg.global_lr, batch=cfg.global_batch, warmup=min(cfg.warmup_steps, total // 4),
                  weight_decay=cfg.weight_decay, grad_clip=1.0)


def personal_recipe(cfg: OptCodeConfig, n: int) -> Recipe:
    epochs = max(1, round(cfg.personal_steps / steps_per_epoch(n, cfg.personal_batch)))
    total = epochs * steps_per_epoch(n, cfg.personal_batch)
    return Recipe(epochs=epochs, lr=cfg.personal_lr, batch=cfg.personal_batch,
                  warmup=min(cfg.warmup_steps, total // 4), weight_decay=cfg.weight_decay, grad_clip=1.0)


def lora_config(cfg: OptCodeConfig) -> LoRAConfig | None:
    if cfg.personalize == "full":
        return None
    if cfg.personalize != "lora":
        raise ValueError(f"personalize must be 'lora' or 'full', got {cfg.personalize!r}")
    return LoRAConfig(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)


def n_global_train(cfg, seqs, languages) -> int:
    """How many training sequences of ``languages`` :func:`train_global` uses (at most one pass of
    ``global_steps`` batches)."""
    return min(sum(seqs[lang]["train"].shape[0] for lang in languages), cfg.global_steps * cfg.global_batch)


def train_global(cfg, fam: Family, params0, seqs, languages, key):
    """[provider] The global model: AdamW on the training sequences of ``languages``."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    data = _concat_shuffled([seqs[lang]["train"] for lang in languages], rng)
    data = data[: n_global_train(cfg, seqs, languages)]
    return provider.train_global(fam, params0, data, global_recipe(cfg, data.shape[0]), key=key)


def zkapex_update(theta_p, fisher, mask, layout: BlockLayout):
    """Group-OBS on every block (:func:`zkapex_jax.protocol.client.unlearn`); returns (θu, info)."""
    theta_u, info = client.unlearn(theta_p, fisher, mask, layout)
    return theta_u, {"kkt_residual_max": info["max_residual"], "delta_norm": info["delta_norm"],
                     "theta_masked_norm": info["theta_masked_norm"]}


def choose_damping(cfg, fam: Family, theta_p, raw, mask, layout: BlockLayout, val) -> dict:
    """The damping of ``cfg.fisher_alphas`` (absolute or relative, as ``cfg.fisher_relative``) whose
    certified update has the best personal accuracy on ``val`` (``(n, seq_len)`` validation
    sequences of the personal language, the first ``cfg.n_val``); a damping whose system is
    singular is skipped. Returns ``{"damping": value, "val_personal_acc": {value: accuracy}}``."""
    if val.shape[0] == 0:
        raise ValueError(f"{cfg.personal_language}: no validation sequences to choose the damping on")
    val = val[: cfg.n_val]
    accs: dict[float, float] = {}
    for a in cfg.fisher_alphas:
        try:
            th_u, _ = zkapex_update(theta_p, damp(raw, a, relative=cfg.fisher_relative), mask, layout)
        except ValueError:
            continue
        accs[float(a)] = _acc(cfg, fam, th_u, val)
    if not accs:
        raise ValueError(f"every damping of {cfg.fisher_alphas} left a singular system")
    best = max(accs, key=lambda a: (accs[a], a))  # ties: the larger damping (the better-conditioned one)
    return {"damping": best, "val_personal_acc": accs}


def sub_block_fisher(fisher, block: int):
    """The Fisher of blocks of ``block`` consecutive weights from one of larger blocks B
    (``block`` divides B): the diagonal ``block × block`` sub-blocks, exactly."""
    nb, b, _ = fisher.shape
    if b % block:
        raise ValueError(f"block {block} does not divide {b}")
    k = b // block
    f = fisher.reshape(nb, k, block, k, block)
    idx = jnp.arange(k)
    return f[:, idx, :, idx, :].transpose(1, 0, 2, 3).reshape(nb * k, block, block)


# ------------------------------------------------------------------------------------ one seed


def _acc(cfg, fam: Family, params, tokens) -> float:
    return fam.accuracy(params, tokens, batch_size=cfg.eval_batch)


def evaluate(cfg, fam: Family, params, seqs) -> dict:
    retain = [l for l in cfg.global_languages if l != cfg.forget_language]
    out = {
        "personal_acc": _acc(cfg, fam, params, seqs[cfg.personal_language]["test"]),
        "forget_acc": _acc(cfg, fam, params, seqs[cfg.forget_language]["test"]),
    }
    per = {l: _acc(cfg, fam, params, seqs[l]["test"]) for l in retain}
    out["retain_acc"] = float(np.mean(list(per.values())))
    for l, v in per.items():
        out[f"acc_{l}"] = v
    return out


def _quick_eval(cfg, fam: Family, params, seqs) -> dict:
    return {"personal_acc": _acc(cfg, fam, params, seqs[cfg.personal_language]["test"]),
            "forget_acc": _acc(cfg, fam, params, seqs[cfg.forget_language]["test"])}


_KEY_NAMES = ("glob", "ret", "pers", "pers_r", "ft", "ga", "sal", "data")


def seed_keys(seed: int) -> dict:
    """The study seed's PRNG keys, split once: the provider's (``glob``, ``ret``) and the client's."""
    return dict(zip(_KEY_NAMES, jax.random.split(jax.random.PRNGKey(seed), len(_KEY_NAMES))))


PROVIDER_FIELDS = ("global_languages", "forget_language", "model", "model_overrides", "global_steps",
                   "global_batch", "global_lr", "warmup_steps", "weight_decay")


def _provider_cache_path(cache_dir, cfg: OptCodeConfig, data: dict, seed: int, tag: str) -> str | None:
    """Where the provider model ``tag`` (``global`` / ``retrain``) of ``seed`` is cached: keyed by
    the provider's config fields, the corpus and the tokenizer."""
    d = {k: getattr(cfg, k) for k in PROVIDER_FIELDS}
    d.update(seq_len=cfg.seq_len, corpus=data["corpus_digest"], tokenizer=data["tokenizer"].sha256)
    return T.cache_path(cache_dir, f"opt-{tag}-s{seed}", d)


def provider_models(cfg: OptCodeConfig, data: dict, seed: int, *, cache_dir=None) -> dict:
    """[provider] The global model and the retrain baseline's global model (trained without the
    forget language) of ``seed``, from the same init; cached under ``cache_dir`` when given.

    Returns ``{"global": (θg, history, seconds, cached), "retrain": (...)}`` (``"retrain": None``
    when ``cfg.retrain`` is False)."""
    fns = lm_family(cfg, data["tokenizer"].vocab_size)
    params0 = fns.init(seed)
    keys = seed_keys(seed)
    retained = [l for l in cfg.global_languages if l != cfg.forget_language]
    out = {"retrain": None}
    jobs = (("global", list(cfg.global_languages), keys["glob"]), ("retrain", retained, keys["ret"]))
    for tag, langs, k in jobs[: 2 if cfg.retrain else 1]:
        def train(langs=langs, k=k):
            params, hist = train_global(cfg, fns, params0, data["seqs"], langs, k)
            return params, {"history": {k2: hist[k2] for k2 in ("steps", "final_loss")}}

        path = _provider_cache_path(cache_dir, cfg, data, seed, tag)
        params, meta, cached = T.load_or_train(path, train, {"seed": seed, "tag": tag})
        hist = meta["history"]
        if cached:
            log(f"provider seed {seed}: {tag} model loaded from {path}")
        else:
            log(f"provider seed {seed}: {tag} model trained ({hist['steps']} steps, loss {hist['final_loss']:.3f}, "
                f"{meta['seconds']:.0f}s)")
        out[tag] = (params, hist, meta["seconds"], cached)
    return out


def world(cfg: OptCodeConfig, seed: int, data: dict, theta_g, theta_gr, keys: dict) -> S.SeedWorld:
    """The code study's seed in the shared stages' words (:class:`~.seed.SeedWorld`): the client's
    ``n_personal_train`` Rust sequences (personalization, curvature, retain data of the
    baselines), the provider's ``n_mask_examples`` forget / retain sequences (the mask scores; the
    whole forget pool feeds gradient ascent), a damping chosen on Rust validation sequences when
    ``cfg.fisher_alphas`` is set, and the baselines of ``cfg.baselines`` with their keys
    (``keys``: ``data``, ``ft``, ``ga``, ``sal``)."""
    seqs, tok = data["seqs"], data["tokenizer"]
    fns = lm_family(cfg, tok.vocab_size)
    rng = np.random.default_rng(int(jax.random.randint(keys["data"], (), 0, 2**31 - 1)))
    rust = seqs[cfg.personal_language]["train"]
    rust = rust[rng.permutation(rust.shape[0])[: cfg.n_personal_train]]
    forget_pool = seqs[cfg.forget_language]["train"]
    forget = forget_pool[rng.choice(forget_pool.shape[0], cfg.n_mask_examples, replace=False)]
    retain = _retain_sample(cfg, seqs, cfg.n_mask_examples, rng)
    wrt = list(cfg.mask_patterns)

    def relabel(d, k):
        x, _ = d
        return x, jax.random.randint(k, x.shape, 0, tok.vocab_size, jnp.int32)

    known = {
        "finetune_after_mask": lambda th, dense: bl.finetune_after_mask(
            fns.loss, th, dense, rust, steps=cfg.ft_steps, lr=cfg.ft_lr, batch_size=cfg.personal_batch, key=keys["ft"]),
        "gradient_ascent": lambda th, dense: bl.gradient_ascent(
            fns.loss, th, forget_pool, steps=cfg.ga_steps, lr=cfg.ga_lr, batch_size=cfg.personal_batch, key=keys["ga"],
            max_loss=cfg.ga_max_loss),
        "ssd": lambda th, dense: bl.ssd(fns.loss, th, forget, rust[: cfg.n_mask_examples], alpha=cfg.ssd_alpha,
                                        lam=cfg.ssd_lambda, wrt=wrt),
        "salun": lambda th, dense: bl.salun(
            pair_loss(fns), th, (forget, forget), (rust, rust), relabel=relabel, fraction=cfg.salun_fraction,
            steps=cfg.salun_steps, lr=cfg.salun_lr, batch_size=cfg.personal_batch, key=keys["sal"], wrt=wrt),
    }
    unknown = [n for n in cfg.baselines if n not in known]
    if unknown:
        raise ValueError(f"unknown baseline {unknown[0]!r} (known: {', '.join(known)})")
    def choose(theta_p, raw, mask, layout):
        return choose_damping(cfg, fns, theta_p, raw, mask, layout, seqs[cfg.personal_language]["val"])

    n_global = n_global_train(cfg, seqs, cfg.global_languages)
    return S.SeedWorld(
        family=fns, stages=cfg.stages(n_global, rust.shape[0]), theta_global=theta_g, theta_global_retrain=theta_gr,
        personal=rust, mask_forget=forget, mask_retain=retain, evaluate=lambda params: evaluate(cfg, fns, params, seqs),
        lora=lora_config(cfg), mask_meta={"forget": cfg.forget_language},
        choose_damping=choose if cfg.fisher_alphas else None,
        baselines={n: known[n] for n in cfg.baselines})


def run_seed(cfg: OptCodeConfig, seed: int, data: dict, *, sweeps: bool, shared_provider: dict | None = None,
             cache_dir=None) -> dict:
    """Every method for one study seed (the shared stages of :func:`zkapex_jax.studies.seed.run_seed`
    on this study's world). ``shared_provider``: the provider's models (:func:`provider_models`)
    to use instead of training them for this seed."""
    t_seed = time.perf_counter()
    times: dict[str, float] = {}
    keys = seed_keys(seed)
    models_g = shared_provider or provider_models(cfg, data, seed, cache_dir=cache_dir)
    theta_g, h_g, times["train_global_s"], _ = models_g["global"]
    theta_gr = h_gr = None
    if models_g["retrain"] is not None:
        theta_gr, h_gr, times["train_retrain_global_s"], _ = models_g["retrain"]
    n_params = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(theta_g)))

    w = world(cfg, seed, data, theta_g, theta_gr, keys)
    run = S.run_seed(w, keys["pers"], keys["pers_r"])
    times.update(run.times)
    metrics, mask, layout = run.metrics, run.mask, run.layout
    if "val_personal_acc" in run.damping:
        log(f"seed {seed}: damping {run.damping['value']:g} chosen on validation "
            + ", ".join(f"{a:g}: {v:.4f}" for a, v in run.damping["val_personal_acc"].items()))
    log(f"seed {seed}: selectivity " + ", ".join(f"{k} {v:.3g}" for k, v in run.selectivity.items()))
    pers, mo = metrics["personalized"]["personal_acc"], metrics["mask_only"]["personal_acc"]
    rec = recovery_of(metrics["zkapex"]["personal_acc"], mo, pers)
    recs = {name: recovery_of(metrics[name]["personal_acc"], mo, pers)
            for name in ("zkapex", "finetune_after_mask") if name in metrics}
    log(f"seed {seed}: " + ", ".join(f"{m} p={v['personal_acc']:.4f} f={v['forget_acc']:.4f}" for m, v in metrics.items())
        + f"; recovery {rec:.3f} (personalization loss {run.history['final_loss']:.3f}, max KKT residual "
        f"{run.obs['max_residual']:.2e})")

    out = {
        "seed": seed,
        "metrics": metrics,
        "recovery": rec,
        "recovery_by_method": recs,
        "obs": {"kkt_residual_max": run.obs["max_residual"], "delta_norm": run.obs["delta_norm"],
                "theta_masked_norm": run.obs["theta_masked_norm"]},
        "selectivity": run.selectivity,
        "damping": run.damping,
        "mask": {"num_masked": mask.num_masked, "size": mask.size, "sha256": mask.content_hash()},
        "layout": {"num_blocks": layout.num_blocks, "block_size": layout.block_size, "size": layout.size},
        "train": {"global": {k: h_g[k] for k in ("steps", "final_loss")},
                  **({"global_retrain": {k: h_gr[k] for k in ("steps", "final_loss")}} if h_gr else {}),
                  "personalize": {k: run.history[k] for k in ("steps", "final_loss")}},
        "n_params": n_params,
    }
    if sweeps:
        t = time.perf_counter()
        raw = np.asarray(run.raw, dtype=np.float32)
        out["sweeps"] = run_sweeps(cfg, w.family, data["seqs"], run.theta_p, run.scores, raw, layout, w.personal,
                                   metrics)
        times["sweeps_s"] = time.perf_counter() - t
    times["seed_total_s"] = time.perf_counter() - t_seed
    out["times"] = times
    log(f"seed {seed} times: " + ", ".join(f"{k}={v:.1f}" for k, v in times.items()))
    return out


def run_sweeps(cfg, fns, seqs, theta_p, scores, raw, layout, rust, metrics) -> dict:
    """Mask fraction, block size, damping and Fisher sample-count sweeps on one seed (``raw``: the
    client's undamped block curvature of ``cfg.curvature``)."""
    pers = metrics["personalized"]["personal_acc"]
    cs = cfg.curvature_spec()
    fisher = damp(raw, cs.damping, relative=cs.relative)

    def point(mask, fisher_b, layout_b):
        th_u, _ = zkapex_update(theta_p, fisher_b, mask, layout_b)
        th_m = bl.mask_only(theta_p, mask.dense())
        e_u, e_m = _quick_eval(cfg, fns, th_u, seqs), _quick_eval(cfg, fns, th_m, seqs)
        return {"zkapex": e_u, "mask_only": e_m,
                "recovery": recovery_of(e_u["personal_acc"], e_m["personal_acc"], pers)}

    base_mask = provider.publish_mask(scores, cfg.mask_fraction, method=cfg.mask_method)
    out: dict[str, list] = {"fraction": [], "block": [], "damping": [], "n_fisher": []}
    for f in cfg.sweep_fractions:
        out["fraction"].append({"x": f, **point(provider.publish_mask(scores, f, method=cfg.mask_method), fisher,
                                                layout)})
    for b in cfg.sweep_blocks:
        if cfg.fisher_block % b:
            continue
        lb = BlockLayout.from_params(theta_p, list(cfg.mask_patterns), b, "out_in")
        out["block"].append({"x": b, **point(base_mask, sub_block_fisher(fisher, b), lb)})
    for d in cfg.sweep_dampings:  # the configured kind of damping (absolute or relative), value d
        try:
            out["damping"].append({"x": d, **point(base_mask, damp(raw, d, relative=cs.relative), layout)})
        except ValueError as e:  # a singular system at tiny damping is a result too
            out["damping"].append({"x": d, "error": str(e)[:200]})
    for m in cfg.sweep_n_fisher:
        f_m = client.client_curvature(fns, theta_p, rust[:m], layout, kind=cs.kind, damping=cs.damping,
                                      relative=cs.relative, chunk_size=min(cfg.fisher_chunk, m))
        try:
            out["n_fisher"].append({"x": m, **point(base_mask, f_m, layout)})
        except ValueError as e:
            out["n_fisher"].append({"x": m, "error": str(e)[:200]})
    return out


# ------------------------------------------------------------------------------------ study


METHOD_ORDER = ("personalized", "mask_only", "zkapex", "retrain", "finetune_after_mask", "gradient_ascent",
                "ssd", "salun", "global", "global_retrain")


def _assemble(cfg_dict: Mapping, data_info: Mapping, seeds: Sequence[int], per_seed: Sequence[Mapping],
              per_seed_metrics: Sequence[Mapping], sweeps, wall: Mapping, device: str) -> dict:
    """The results object from per-seed records (also used by ``--merge``)."""
    def rec(ms, name):
        return recovery_of(ms[name]["personal_acc"], ms["mask_only"]["personal_acc"], ms["personalized"]["personal_acc"])

    recs = [rec(ms, "zkapex") for ms in per_seed_metrics]
    return {
        "study": STUDY,
        "seeds": [int(s) for s in seeds],
        "methods": aggregate(per_seed_metrics),
        "recovery": mean_std(recs),
        "recovery_per_seed": recs,
        "selectivity": {k: mean_std([s["selectivity"][k] for s in per_seed])
                        for k in sorted(set.intersection(*[set(s.get("selectivity") or {}) for s in per_seed]))},
        "recovery_by_method": {m: mean_std([rec(ms, m) for ms in per_seed_metrics])
                               for m in ("zkapex", "finetune_after_mask", "gradient_ascent", "ssd", "salun")
                               if m in per_seed_metrics[0]},
        "config": dict(cfg_dict),
        "data": dict(data_info),
        "per_seed": list(per_seed),
        "per_seed_metrics": list(per_seed_metrics),
        "sweeps": sweeps,
        "wall_time_s": dict(wall),
        "paper": PAPER,
        "device": device,
    }


def run_study(cfg: OptCodeConfig, seeds: Sequence[int], out: str, figures: str | None = None, *,
              sweeps: bool = True, cache_dir=None) -> dict:
    """Run ``cfg`` for every seed (sweeps on the first), write the results JSON to ``out`` (and
    figures to ``figures``). Returns the results object. ``cache_dir``: keep the provider's trained
    models there and reuse them on the next run with the same provider settings and data."""
    log(f"config {cfg.name}: seeds {list(seeds)}, device {jax.devices()[0]}")
    t0 = time.perf_counter()
    t = time.perf_counter()
    data = prepare_data(cfg)
    t_data = time.perf_counter() - t
    log(f"data ready ({t_data:.1f}s): vocab {data['tokenizer'].vocab_size}, sequences {data['sequences']}")
    shared = None if cfg.provider_seed is None else provider_models(cfg, data, cfg.provider_seed, cache_dir=cache_dir)
    runs = [run_seed(cfg, s, data, sweeps=sweeps and i == 0, shared_provider=shared, cache_dir=cache_dir)
            for i, s in enumerate(seeds)]
    data_info = {"sequences": data["sequences"], "corpus": data["corpus_summary"], "roots": data["roots"],
                 "corpus_sha256": data["corpus_digest"], "tokenizer_sha256": data["tokenizer"].sha256,
                 "vocab_size": data["tokenizer"].vocab_size}
    results = _assemble(
        cfg.to_dict(), data_info, seeds,
        [{k: r[k] for k in ("seed", "recovery", "obs", "selectivity", "mask", "layout", "train", "n_params", "times", "damping") if k in r}
         for r in runs],
        [{m: r["metrics"][m] for m in METHOD_ORDER if m in r["metrics"]} for r in runs],
        runs[0].get("sweeps"),
        {"data_s": t_data, "total_s": time.perf_counter() - t0, "per_seed_s": [r["times"]["seed_total_s"] for r in runs]},
        str(jax.devices()[0]),
    )
    obj = write_results(out, results)
    if figures:
        make_figures(obj, figures)
    log(f"wrote {out}: recovery {fmt(obj['recovery'])}")
    return obj


def fmt(st) -> str:
    return "n/a" if not st or st.get("mean") is None else f"{st['mean']:.3f} ± {st['std']:.3f}"


def make_figures(results: Mapping, figdir: str) -> list[str]:
    """docs/figures/opt_*.png from a results object (sweeps of the first seed, methods bar chart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(figdir, exist_ok=True)
    written = []
    sw = results.get("sweeps") or {}
    retrain = results["methods"].get("retrain", {})
    pers = results["per_seed_metrics"][0]["personalized"]
    labels = {"fraction": ("mask fraction", True), "block": ("Fisher block size", True),
              "damping": ("damping", True), "n_fisher": ("Fisher samples (Rust sequences)", True)}
    for key, (xlabel, logx) in labels.items():
        pts = [p for p in sw.get(key, []) if "error" not in p]
        if not pts:
            continue
        xs = [p["x"] for p in pts]
        series = {
            "ZK-APEX personal acc": ([p["zkapex"]["personal_acc"] for p in pts], [0.0] * len(pts)),
            "mask-only personal acc": ([p["mask_only"]["personal_acc"] for p in pts], [0.0] * len(pts)),
            "ZK-APEX forget acc": ([p["zkapex"]["forget_acc"] for p in pts], [0.0] * len(pts)),
        }
        hl = {"personalized personal acc": pers["personal_acc"], "personalized forget acc": pers["forget_acc"],
              "retrain forget acc (mean)": (retrain.get("forget_acc") or {}).get("mean")}
        path = os.path.join(figdir, f"opt_sweep_{key}.png")
        plot_sweep(path, xs, series, xlabel=xlabel, ylabel="next-token top-1 accuracy",
                   title=f"OPT code study, seed {results['seeds'][0]}: {xlabel}", logx=logx, hlines=hl)
        written.append(path)
    # methods bar chart
    ms = [m for m in METHOD_ORDER if m in results["methods"] and not m.startswith("global")]
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
    x = np.arange(len(ms))
    for i, (metric, lab) in enumerate((("personal_acc", "Rust (personal)"), ("forget_acc", "JavaScript (forget)"))):
        mu = [results["methods"][m][metric]["mean"] for m in ms]
        sd = [results["methods"][m][metric]["std"] for m in ms]
        # dots with error bars (not bars): the axis does not start at 0, the differences are small
        ax.errorbar(x + (i - 0.5) * 0.2, mu, yerr=sd, fmt="o", capsize=3, label=lab)
    ax.set_xticks(x)
    ax.set_xticklabels(ms, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("next-token top-1 accuracy")
    ax.set_title(f"OPT code study: mean ± std over seeds {results['seeds']}; recovery {fmt(results['recovery'])}",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path = os.path.join(figdir, "opt_methods.png")
    save_figure(fig, path)
    written.append(path)
    return written


def report_tables(results: Mapping) -> str:
    """Markdown tables (methods, recovery, sweeps, wall times) from a results object."""
    metrics = ["personal_acc", "forget_acc", "retain_acc", "forget_progress"]
    ms = {m: results["methods"][m] for m in METHOD_ORDER if m in results["methods"]}
    lines = [f"Seeds {results['seeds']}; mean ± std (population std over seeds).", "",
             markdown_table(ms, metrics, digits=4), "",
             f"Recovery (zkapex, on personal_acc): {fmt(results['recovery'])}; per seed "
             + ", ".join("n/a" if r is None else f"{r:.3f}" for r in results["recovery_per_seed"]), ""]
    for m, st in results.get("recovery_by_method", {}).items():
        lines.append(f"- recovery of {m}: {fmt(st)}")
    lines.append("")
    sw = results.get("sweeps") or {}
    for key, pts in sw.items():
        if not pts:
            continue
        lines += [f"Sweep `{key}` (seed {results['seeds'][0]}):", "",
                  "| x | zkapex personal | zkapex forget | mask-only personal | mask-only forget | recovery |",
                  "|---|---|---|---|---|---|"]
        for p in pts:
            if "error" in p:
                lines.append(f"| {p['x']} | error: {p['error'][:80]} | | | | |")
                continue
            rec = "n/a" if p["recovery"] is None else f"{p['recovery']:.3f}"
            lines.append(f"| {p['x']} | {p['zkapex']['personal_acc']:.4f} | {p['zkapex']['forget_acc']:.4f} | "
                         f"{p['mask_only']['personal_acc']:.4f} | {p['mask_only']['forget_acc']:.4f} | {rec} |")
        lines.append("")
    lines += ["Wall times per seed (s):", "", "| phase | " + " | ".join(str(s["seed"]) for s in results["per_seed"]) + " |",
              "|---|" + "---|" * len(results["per_seed"])]
    for k in results["per_seed"][0]["times"]:
        lines.append(f"| {k} | " + " | ".join(f"{s['times'].get(k, float('nan')):.1f}" for s in results["per_seed"]) + " |")
    lines.append("")
    lines.append(f"Total wall time: {results['wall_time_s']['total_s']:.0f} s on {results.get('device')}.")
    return "\n".join(lines)


def merge_results(paths: Sequence[str], out: str, figures: str | None = None) -> dict:
    """Combine results files of the SAME config, corpus and tokenizer run for different seeds
    (e.g. seeds run in separate processes) into one results file; sweeps from the first file
    that has them. Raises ``ValueError`` when the runs are not comparable."""
    parts = [load_results(p) for p in paths]
    ref = parts[0]
    for p, r in zip(paths, parts):
        for key in ("config",):
            if r[key] != ref[key]:
                raise ValueError(f"{p}: {key} differs from {paths[0]}'s; only identical runs can be merged")
        for key in ("corpus_sha256", "tokenizer_sha256"):
            if r["data"][key] != ref["data"][key]:
                raise ValueError(f"{p}: data {key} differs from {paths[0]}'s")
    seeds = [s for r in parts for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds overlap across the files: {seeds}")
    sweeps = next((r["sweeps"] for r in parts if r.get("sweeps")), None)
    wall = {"data_s": [r["wall_time_s"]["data_s"] for r in parts],
            "total_s": sum(r["wall_time_s"]["total_s"] for r in parts),
            "per_seed_s": [x for r in parts for x in r["wall_time_s"]["per_seed_s"]],
            "merged_from": [os.path.basename(p) for p in paths]}
    results = _assemble(ref["config"], ref["data"], seeds, [x for r in parts for x in r["per_seed"]],
                        [x for r in parts for x in r["per_seed_metrics"]], sweeps, wall, ref["device"])
    obj = write_results(out, results)
    if figures:
        make_figures(obj, figures)
    log(f"merged {len(paths)} files into {out}: seeds {seeds}, recovery {fmt(obj['recovery'])}")
    return obj
