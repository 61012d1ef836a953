"""Arguments and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from emolens.lens import LanguageModel


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--model, --dtype, --device, --device-map."""
    parser.add_argument("--model", default="default",
                        help="'default', a .gguf file, a local HF folder or a cached hub id")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    parser.add_argument("--device-map", default=None, help="e.g. 'auto' for multi-GPU models")


def load_model_from_args(args: argparse.Namespace) -> LanguageModel:
    from emolens.loading import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device,
                      device_map=args.device_map)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
