"""`python -m acs.deploy CHECKPOINT --out DIR`: A trained run's checkpoint as deployable files, checked
against the model as trained on the run's test split.

Writes to DIR: model.pt (TorchScript: forward(x) -> (logits, macs per sample)), acs_native.so where
model.pt calls the executor's native kernels (load it first: torch.ops.load_library, or import
acs.deploy), model.onnx where the deployed model is static (static gates, no gates, G-ResNeXt), and
deploy.json (accuracy on the test split, MACs per image and batch-1 latency of the training and the
deployed form).

example:
  python -m acs.deploy outputs/2026-01-01/12-00-00/checkpoints/best.pt --out deployed/densenet40
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from acs.data import DataFileError, DatasetNotFoundError
from acs.deploy.native import NativeUnavailable
from acs.deploy.pipeline import DeployError, deploy
from acs.messages import one_line
from acs.training.checkpoint import CheckpointError


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {minimum}, got '{text}'")
        return value

    return parse


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    summary, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m acs.deploy",
        description=" ".join(summary.split(": ", 1)[1].split()) + "\n\n" + details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a run's checkpoints/best.pt or last.pt")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --out")
    parser.add_argument("--data-root", metavar="DIR", help="where the test data lies (default: the run's dataset.root)")
    parser.add_argument(
        "--samples", type=_count(1), metavar="N", help="accuracy on the first N test images (default: all)"
    )
    parser.add_argument(
        "--no-native", dest="native", action="store_false", default=None,
        help="gated DenseNets: executor on tensor operations only, so that model.pt needs no compiled "
        "library (by default the native kernels are used where they build, and shipped beside it)",
    )  # fmt: skip
    parser.add_argument("--runs", type=_count(1), default=50, metavar="N", help="timed batch-1 calls per form")
    parser.add_argument("--warmup", type=_count(0), default=10, metavar="N", help="untimed calls before timing")
    parser.add_argument("--threads", type=_count(1), metavar="N", help="torch.set_num_threads (default: torch's)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        deploy(
            args.checkpoint, args.out, overwrite=args.overwrite, data_root=args.data_root, samples=args.samples,
            native=args.native, runs=args.runs, warmup=args.warmup,
        )  # fmt: skip
    except (CheckpointError, DeployError, DatasetNotFoundError, DataFileError, NativeUnavailable) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except OSError as error:  # the output folder cannot be written
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
