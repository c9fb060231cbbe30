"""Configs (as code) of Study 2: the code language model (the paper's OPT-125M / CodeParrot
study, forget Scala, personalize on Rust with a merged LoRA; ~70% recovery).

Our analog on locally installed code (see :mod:`zkapex_jax.data.code`):

- global languages (the provider's training data): C, C++, Python, JavaScript;
- forget language: JavaScript (the provider unlearns it);
- personalization language (the client's): Rust, never seen by the global model
  (as Rust is the LoRA language in the paper) — tokenized with the provider's BPE, which is
  trained on the global languages' training split only;
- mask: fc1 + fc2 kernels of every layer, global top 4%, ``second_order_neg`` with h=0.5,
  r=1.5 (the paper's LM values) from the provider's global model on forget vs. retain data;
- client Fisher: blocks along the input dimension (order ``out_in``), damping 1e-6.

``CONFIGS``: ``default`` (CPU study, sized to run 3 seeds in ~30 min on 2 shared cores),
``tiny`` (CI smoke test, < 1 min) and ``opt125m`` (the paper's model size, for a GPU run).
"""

from __future__ import annotations

from zkapex_jax.studies.opt_code import OptCodeConfig


DEFAULT = OptCodeConfig(name="default")

TINY = DEFAULT.replace(
    name="tiny",
    max_bytes={"train": 60_000, "val": 8_000, "test": 12_000},
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
    max_bytes={"train": 4_000_000, "val": 200_000, "test": 300_000},
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

CONFIGS = {"default": DEFAULT, "tiny": TINY, "opt125m": OPT125M}


def get_config(name: str) -> OptCodeConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown opt_code config {name!r}; known: {sorted(CONFIGS)}")
    return CONFIGS[name]
