"""`python -m acs.deploy CHECKPOINT --out DIR`: a trained run's checkpoint as deployable files.

Writes to DIR: model.pt (TorchScript: forward(x) -> (logits, macs per sample)), model.onnx where
the deployed model is static (static gates, no gates, G-ResNeXt), and deploy.json (accuracy on the
test split, MACs per image and batch-1 latency of the training and the deployed form).

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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    summary, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="python -m acs.deploy",
        description=summary.split(": ", 1)[1] + "\n\n" + details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="a training checkpoint (a run's checkpoints/best.pt or last.pt)")
    parser.add_argument("--out", required=True, help="folder to write (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --out")
    parser.add_argument("--data-root", help="where the test data lies (default: the run's dataset.root)")
    parser.add_argument("--samples", type=_positive, help="accuracy on the first N test samples (default: all)")
    parser.add_argument(
        "--no-native", dest="native", action="store_false", default=None,
        help="gated DenseNets: executor on tensor operations only, so that the TorchScript file loads "
        "with torch alone (by default the compiled kernels are used where they build)",
    )  # fmt: skip
    parser.add_argument("--runs", type=_positive, default=50, help="timed batch-1 calls per form")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    parser.add_argument("--threads", type=_positive, help="torch.set_num_threads (default: torch's choice)")
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
