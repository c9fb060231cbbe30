"""Configs (as code) of Study 2: the code language model (the paper's OPT-125M / CodeParrot
study, forget Scala, personalize on Rust with a merged LoRA; ~70% recovery).

Our analog on locally installed code (see :mod:`zkapex_jax.code_data`):

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

import dataclasses
from dataclasses import dataclass, field


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
    n_eval: int = 256  # test sequences per language for the accuracies
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
    n_fisher: int = 256
    fisher_chunk: int = 32
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
