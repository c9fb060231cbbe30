"""Argument types of the ``zkapex`` command. argparse turns a ValueError/ArgumentTypeError raised
by a type into "error: argument --x: ..." and exit 2, before any work is done."""

from __future__ import annotations

import argparse
import os

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
WRAP = _int_in(1, 64)  # circuits.relation.MAX_WRAP
#: the CLI's column wrapping (benchmarks/bench_wrap.py: logrows 11 × 8 cost 0.65 of 13 × 2 per block at
#: B = 16, logrows 15 × 8 cost 0.21 of 19 × 1 at B = 576; and every block of ≤ 32 weights is provable)
DEFAULT_WRAP = 8
SEED = _int_in(0, 2**31 - 1)
NONNEG = _int_in(0, 4096)


def _say(msg: str):
    print(msg, flush=True)