"""`python -m acs.bench`: CPU latency of dense, masked and deployed forms, as a table and JSON.

A gated DenseNet's executor is reported first against the same executor running the ungated model
(what skipping channels saves), then against PyTorch running the ungated model.

python -m acs.bench --model densenet40 --keep 0.5            # gates calibrated to keep half
python -m acs.bench --model densenet40 --batch 16            # 16 samples, each with its own masks
python -m acs.bench --model densenet40 --gate fbs --keep 0.5 # another gate design (fbs: density)
python -m acs.bench --checkpoint outputs/.../best.pt          # a trained model, its own gates
python -m acs.bench --model g_resnext29_2x64d --groups 8      # G-ResNeXt masked vs materialized
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from acs.deploy.benchmark import benchmark_densenet, benchmark_resnext, distinct_masks
from acs.deploy.calibrate import calibrate_keep, set_groups
from acs.files import write_json
from acs.models import create_model
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt
from acs.provenance import collect as collect_provenance
from acs.training.checkpoint import CheckpointError, load_trained_model


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m acs.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet40")
    parser.add_argument("--checkpoint", help="a run's checkpoint: its model, gates and learned decisions")
    parser.add_argument("--keep", type=float, default=0.5, help="without checkpoint: fraction of channels kept")
    parser.add_argument("--groups", type=int, default=8, help="G-ResNeXt without checkpoint: DGConv groups")
    parser.add_argument("--input", help="C,H,W of one image (default: the checkpoint's data, else 3,32,32)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--gate", default="acs", choices=["acs", "ddi", "aig", "fbs"], help="without checkpoint")
    parser.add_argument("--gate-width", type=int, default=32, help="width of acs, ddi and aig gates")
    parser.add_argument("--batch", type=int, default=1, help="DenseNets: samples per call (different masks)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON results")
    return parser.parse_args(argv)


def _input_size(text: str):
    try:
        size = tuple(int(v) for v in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"--input must be C,H,W with positive integers, got '{text}'")
    return size


def _calibrated(args, input_size):
    """A freshly initialised model set to an operating point: gates keeping ``--keep`` of the
    channels (DenseNets), or ``--groups`` contiguous DGConv groups (G-ResNeXt); and its ungated twin."""
    options = {"num_classes": args.classes, "in_channels": input_size[0]}
    gated = args.model.startswith("densenet")
    gate = {"name": args.gate, **({"density": args.keep} if args.gate == "fbs" else {"width": args.gate_width})}
    if gated and gate.get("density") == 0.0:
        raise ValueError("fbs keeps at least one channel per layer: --keep must be > 0")
    model = create_model(args.model, **options, **({"gate": gate} if gated else {}))
    if isinstance(model, DenseNet):
        calibrate_keep(model, input_size, args.keep)
    else:
        set_groups(model, args.groups)
    return model, create_model(args.model, **options, **({"gate": "none"} if gated else {}))


def _trained(path: str):
    """The checkpoint's model, rebuilt from the config saved with it, its ungated twin, and the
    input size of the data set it was trained on."""
    trained = load_trained_model(path)
    return trained.model, trained.ungated(), tuple(trained.info.input_size)


def _print(rows, lead, batch: int, masks) -> None:
    if lead:
        samples = f"batch {batch}, {masks} different masks" if batch > 1 else "batch 1"
        print(f"gated executor ({samples}):")
        for c in lead:
            print(
                f"  vs {c['baseline']:20s} latency {c['latency_ratio']:.3f}x, MACs {c['macs_ratio']:.3f}x, "
                f"realisation {c['realisation']:.3f}, CPU time {c['cpu_ratio']:.3f}x; "
                f"{c['gmacs_per_s']:.1f} vs {c['baseline_gmacs_per_s']:.1f} GMAC/s"
            )
    header = ["latency ms", "CPU ms", "MMACs", "GMAC/s", "MACs ratio", "latency ratio", "realisation"]
    print(f"{'variant':26s} " + " ".join(f"{h:>13s}" for h in header))
    for r in rows:
        values = [r["latency_ms"], r["cpu_ms"], r["macs"] / 1e6, r["gmacs_per_s"]]
        values += [r["macs_ratio"], r["latency_ratio"], r["realisation"]]
        print(f"{r['variant']:26s} " + " ".join(f"{v:13.3f}" for v in values))


def main(argv=None) -> int:
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        if args.batch < 1:
            raise ValueError(f"--batch must be a positive integer, got {args.batch}")
        if args.checkpoint:
            model, dense, input_size = _trained(args.checkpoint)
            if args.input:
                input_size = _input_size(args.input)
        else:
            input_size = _input_size(args.input or "3,32,32")
            model, dense = _calibrated(args, input_size)
    except (CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyError as error:
        print(f"error: {args.checkpoint}: the checkpoint's saved config lacks {error}", file=sys.stderr)
        return 2
    lead, masks = [], None
    if isinstance(model, DenseNet):
        rows, lead = benchmark_densenet(model, dense, input_size, args.runs, args.warmup, args.batch)
        masks = distinct_masks(model, input_size, args.batch)
    elif isinstance(model, GResNeXt):
        rows = benchmark_resnext(model, input_size, args.runs, args.warmup)
    else:
        print(f"error: no benchmark for {type(model).__name__}", file=sys.stderr)
        return 2
    _print(rows, lead, args.batch if isinstance(model, DenseNet) else 1, masks)
    result = {
        "model": args.checkpoint or args.model,
        "input": list(input_size),
        "batch": args.batch if isinstance(model, DenseNet) else 1,
        "distinct_masks": masks,
        "threads": torch.get_num_threads(),
        "provenance": collect_provenance(torch.device("cpu")),  # as a run's summary.json records it
        "keep": None if args.checkpoint else args.keep,
        "gate": None if args.checkpoint else args.gate,
        "headline": lead,
        "rows": rows,
    }
    write_json(Path(args.out), result)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
