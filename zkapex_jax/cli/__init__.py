"""The ``zkapex`` command: thin verbs over the protocol's stages (zkapex_jax.protocol) and, for
the built-in data and the demo, zkapex_jax.studies.image.

    zkapex keys     --block-size B [--logrows L] [--wrap W] [--column-range inline|amortized] [--kmax K]
                    [--keystore DIR] [--srs FILE]
    zkapex train    --out CKPT [--model M] [--pretrained] [--data D] [--epochs E]         (provider)
    zkapex mask     --global CKPT --out MASK.json [--model M] [--fraction F] [--seed S] (provider)
    zkapex personalize --global CKPT --out CKPT_P [--data D] [--epochs E] [--lr LR]   (client)
    zkapex fisher   --params CKPT --out FISHER.npz [--model M] [--block-size B] [--seed S] (client)
    zkapex commit   --params CKPT --fisher FISHER.npz --client-id ID --out COM.npz --secrets SEC.npz
                    [--logrows L] [--wrap W] [--column-range inline|amortized] [--force]   (client)
    zkapex unlearn  --params CKPT --commitment COM --secrets SEC --mask MASK --out CKPT_U [--fisher F]
    zkapex prove    --params CKPT --commitment COM --secrets SEC --mask MASK [--fisher F]
                    --request-id R --out BUNDLE [--jobs N] [--executor process|ray]
                    [--ray-address ADDR] [--unlearned CKPT_U]                              (client)
    zkapex verify   BUNDLE --commitment COM --mask MASK [--keystore DIR] [--client-id ID]
                    [--request-id R] [--json]                                              (provider)
    zkapex demo     --out DIR [--big] [--jobs N]       the whole protocol on Fashion-MNIST

``--model`` is a built-in config (``vit-demo``, ``vit-tiny``, ``opt-tiny``, …,
``efficientnet-lite0``: 64 px, 10 classes, frozen pretrained stem) or a local Hugging Face model
directory; ``--data`` / ``--forget`` / ``--retain`` are an ``.npz`` or an image folder, or text/code files for a language
model (with ``--tokenizer`` and ``--seq-len``).

``verify`` exits 0 (valid), 1 (rejected, with the reason) or 2 (malformed input). Common
options: ``--cache DIR`` (keys/SRS cache, default ``$ZKAPEX_CACHE`` or ``~/.cache/zkapex``),
``--srs FILE`` (a ceremony SRS; without it a locally generated one is used and labelled INSECURE).

Layout: argument types (``_args``), input loading and checks (``_inputs``), the verbs
(``_verbs``: each one protocol stage of :mod:`zkapex_jax.protocol.api`), the parser (``_parser``);
the demo itself is :mod:`zkapex_jax.studies.demo`.
"""

from __future__ import annotations

import os
import sys

from ._inputs import load_hf_dir
from ._parser import build_parser
from ._verbs import EXIT_MALFORMED, EXIT_REJECTED, EXIT_VALID

__all__ = ["main", "build_parser", "EXIT_VALID", "EXIT_REJECTED", "EXIT_MALFORMED"]


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    except SystemExit as e:  # argparse: usage errors (exit 2, message on stderr) and --help (0)
        return e.code if isinstance(e.code, int) else EXIT_MALFORMED
    if getattr(args, "cache", None):
        os.environ["ZKAPEX_CACHE"] = str(args.cache)
    if args.cmd == "verify":
        return args.fn(args)
    from ..protocol.prover import ProofError

    load_hf_dir.cache_clear()  # one command = one load; never stale across calls in one process

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