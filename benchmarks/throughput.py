"""Training and evaluation images/s of ungated and gated DenseNet-40, from the training code itself.

    python benchmarks/throughput.py                                  # CPU, fp32, batch 64
    python benchmarks/throughput.py --device cuda --precision bf16 --channels-last [--compile]

Both variants run the same training step (forward, loss, backward, SGD step) and the same
inference on CIFAR-shaped random input; the ratio lines give gated/ungated, where 1.0 means the
gates cost nothing in throughput. ``--compile`` times each variant also under ``torch.compile``,
beside its eager self, and adds the compiled gated/ungated and compiled/eager ratios (the warm-up
steps compile: keep ``--warmup`` at least 1). Results are also written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from acs.files import write_json
from acs.models import create_model
from acs.training.benchmark import COMPILED, compile_ratios, measure, ratio_lines, ratios, with_compiled
from acs.training.builders import seed_everything
from acs.training.engine import StepContext

VARIANTS = {"ungated": "none", "gated": {"name": "acs", "width": 32}}


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet40")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast on CUDA")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time each model under torch.compile")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", default="3,32,32", help="C,H,W")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args(argv)


def run(args) -> dict:
    seed_everything(0)
    device = torch.device(args.device)
    input_size = tuple(int(v) for v in args.input.split(","))
    ctx = StepContext(device, args.precision, args.channels_last, progress=False)
    models = {}
    for label, gate in VARIANTS.items():
        model = create_model(args.model, num_classes=10, in_channels=input_size[0], gate=gate).to(device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
        models[label] = model
    if args.compile:
        models = with_compiled(models)
    rows = measure(models, input_size, args.batch, ctx, args.warmup, args.steps)
    keys = ("train_images_per_s", "eval_images_per_s")
    gated = ratios(rows, {"gated": "ungated", f"gated{COMPILED}": f"ungated{COMPILED}"}, keys)
    return {
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "batch": args.batch,
        "results": rows,
        "gated_over_ungated": gated["gated/ungated"],
        "ratios": {**gated, **compile_ratios(rows, keys)},
    }


def main(argv=None) -> int:
    args = _parse(argv)
    result = run(args)
    print(f"{args.model} on {result['device']}, batch {args.batch}, {args.precision}")
    width = max(len(name) for name in [*result["results"], *result["ratios"]])
    print(f"{'':{width}s} {'train img/s':>12s} {'eval img/s':>12s} {'MMACs/img':>10s}")
    for label, row in result["results"].items():
        print(
            f"{label:{width}s} {row['train_images_per_s']:12.1f} {row['eval_images_per_s']:12.1f}"
            f" {row['macs'] / 1e6:10.1f}"
        )
    print("\n".join(ratio_lines(result["ratios"], ("train_images_per_s", "eval_images_per_s"), width)))
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
