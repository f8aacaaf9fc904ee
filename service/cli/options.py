"""Options several commands share (one definition each, so their spelling and help stay the same)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_encoder_runtime(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str, what: str) -> None:
    """The ``--encoder-runtime`` option (retrieval/onnx_encoder.py) of the commands that encode."""
    from retrieval.onnx_encoder import RUNTIMES

    parser.add_argument(
        "--encoder-runtime",
        default=default,
        choices=RUNTIMES,
        help=f"{what}: torch (the reference), onnx (ONNX Runtime, float32: the same vectors) or onnx-int8 "
        f"(int8 weights: fastest, slightly different vectors); default {default}",
    )
