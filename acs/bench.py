"""`python -m acs.bench`: batch-1 CPU latency of dense, masked and deployed forms, as a table and JSON.

python -m acs.bench --model densenet40 --keep 0.5            # gates calibrated to keep half
python -m acs.bench --checkpoint outputs/.../best.pt          # a trained model, its own gates
python -m acs.bench --model g_resnext29_2x64d --groups 8      # G-ResNeXt masked vs materialized
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from acs.deploy.benchmark import benchmark_densenet, benchmark_resnext
from acs.deploy.calibrate import calibrate_keep, set_groups
from acs.models import create_model
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt
from acs.training.checkpoint import CheckpointError, load_checkpoint, load_model_state


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m acs.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet40")
    parser.add_argument("--checkpoint", help="a run's checkpoint: its model, gates and learned decisions")
    parser.add_argument("--keep", type=float, default=0.5, help="without checkpoint: fraction of channels kept")
    parser.add_argument("--groups", type=int, default=8, help="G-ResNeXt without checkpoint: DGConv groups")
    parser.add_argument("--input", default="3,32,32", help="C,H,W of one image")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--gate-width", type=int, default=32)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON results")
    return parser.parse_args(argv)


def _model(args, input_size):
    if not args.checkpoint:
        options = {"num_classes": args.classes, "in_channels": input_size[0]}
        model = create_model(
            args.model,
            **options,
            **({"gate": {"name": "acs", "width": args.gate_width}} if args.model.startswith("densenet") else {}),
        )
        if isinstance(model, DenseNet):
            calibrate_keep(model, input_size, args.keep)
        else:
            set_groups(model, args.groups)
        return model, create_model(args.model, **options, **({"gate": "none"} if isinstance(model, DenseNet) else {}))
    state = load_checkpoint(args.checkpoint)
    config = state["config"]
    name, gate = config["model"]["name"], config["gate"]
    fc = next(v for k, v in state["model"].items() if k == "fc.weight")
    stem = next(v for k, v in state["model"].items() if k in ("stem.weight", "conv1.weight"))
    options = {"num_classes": fc.shape[0], "in_channels": stem.shape[1]}
    model = create_model(name, **options, **({"gate": gate} if name.startswith("densenet") else {}))
    load_model_state(model, state, name, args.checkpoint)
    return model, create_model(name, **options, **({"gate": "none"} if name.startswith("densenet") else {}))


def main(argv=None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    input_size = tuple(int(v) for v in args.input.split(","))
    torch.manual_seed(0)
    try:
        model, dense = _model(args, input_size)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if isinstance(model, DenseNet):
        rows = benchmark_densenet(model, dense, input_size, args.runs, args.warmup)
    elif isinstance(model, GResNeXt):
        rows = benchmark_resnext(model, input_size, args.runs, args.warmup)
    else:
        print(f"error: no benchmark for {type(model).__name__}", file=sys.stderr)
        return 2
    header = ["latency ms", "MMACs", "MACs ratio", "latency ratio", "realisation"]
    print(f"{'variant':26s} " + " ".join(f"{h:>13s}" for h in header))
    for r in rows:
        values = [r["latency_ms"], r["macs"] / 1e6, r["macs_ratio"], r["latency_ratio"], r["realisation"]]
        print(f"{r['variant']:26s} " + " ".join(f"{v:13.3f}" for v in values))
    result = {
        "model": args.checkpoint or args.model,
        "input": list(input_size),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "keep": None if args.checkpoint else args.keep,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
