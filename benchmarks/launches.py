"""Kernel-launching aten operations per training step and per evaluation step, every registered model
× gate design, each as a ratio to the same model ungated.

    python benchmarks/launches.py                               # every model × gate (a few minutes on CPU)
    python benchmarks/launches.py --models densenet40 --gates none,acs --top 5
    python benchmarks/launches.py --skip-large                  # leave out the ImageNet-sized ResNeXts

Counted on the CPU with :class:`acs.cost.launches.LaunchCounter` (views left out): on a GPU each
operation counted is a kernel launch, so a small gated model's step is bounded by their number.
A training step is forward (train mode), cross-entropy plus a flops-style term on the batch-mean
MACs, and backward; an evaluation step is one forward in eval mode without autograd.
Models that take no ``gate`` option (the G-ResNeXts) are counted ungated and listed as such for
the other designs; nothing is left out without a line saying so.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from typing import Dict, List, Optional

import torch

from acs.cost.launches import step_launches
from acs.models import MODELS, create_model, list_models

GATES = ("none", "acs", "ddi", "aig", "fbs", "static")
#: Models whose ImageNet-sized steps take long on a CPU; ``--skip-large`` leaves them out (with a line).
LARGE = ("g_resnext101",)


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated model names (default: all registered)")
    parser.add_argument("--gates", default=",".join(GATES), help="comma-separated gate designs (default: all)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--input", default="3,32,32", help="C,H,W")
    parser.add_argument("--skip-large", action="store_true", help=f"leave out {', '.join(LARGE)} (reported as skipped)")
    parser.add_argument("--top", type=int, default=0, help="also list the N most frequent operations of each step")
    return parser.parse_args(argv)


def takes_gate(name: str) -> bool:
    return "gate" in inspect.signature(MODELS.get(name)).parameters


def count(name: str, gate: str, input_size, batch: int, seed: int = 0) -> Dict[str, object]:
    """Launch counts of one training and one evaluation step of ``name`` with ``gate``."""
    torch.manual_seed(seed)
    kwargs = {"num_classes": 10, "in_channels": input_size[0]}
    if gate != "none" or takes_gate(name):
        kwargs["gate"] = gate
    model = create_model(name, **kwargs)
    x = torch.randn(batch, *input_size)
    target = torch.randint(0, 10, (batch,))
    start = time.perf_counter()
    counts = step_launches(model, x, target)
    return {"counts": counts, "seconds": time.perf_counter() - start}


def run(args) -> List[Dict[str, object]]:
    names = [n for n in args.models.split(",") if n] or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(list_models())}")
    gates = [g for g in args.gates.split(",") if g]
    bad = [g for g in gates if g not in GATES]
    if bad:
        raise SystemExit(f"unknown gate design(s) {', '.join(bad)}; available: {', '.join(GATES)}")
    input_size = tuple(int(v) for v in args.input.split(","))
    rows: List[Dict[str, object]] = []
    for name in names:
        if args.skip_large and name in LARGE:
            rows.append({"model": name, "gate": "*", "note": "skipped (--skip-large)"})
            continue
        reference: Optional[Dict[str, object]] = count(name, "none", input_size, args.batch)
        gated = [g for g in gates if g != "none"]
        if gated and not takes_gate(name):
            rows.append({"model": name, "gate": ",".join(gated), "note": "n/a: the model has no gates"})
        for gate in gates if takes_gate(name) else [g for g in gates if g == "none"]:
            result = reference if gate == "none" else count(name, gate, input_size, args.batch)
            row = {"model": name, "gate": gate, "seconds": result["seconds"]}
            for step in ("train", "eval"):
                row[step] = result["counts"][step]
                row[f"{step}_ratio"] = result["counts"][step].total / reference["counts"][step].total
            rows.append(row)
    return rows


def main(argv=None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)  # counts do not depend on threads; one keeps a shared machine responsive
    rows = run(args)
    print(f"kernel-launching aten ops per step (views excluded), batch {args.batch}, input {args.input}")
    print(f"{'model':20s} {'gate':7s} {'train':>7s} {'×none':>6s} {'eval':>7s} {'×none':>6s}")
    for row in rows:
        if "note" in row:
            print(f"{row['model']:20s} {row['gate']}: {row['note']}")
            continue
        print(
            f"{row['model']:20s} {row['gate']:7s} {row['train'].total:7d} {row['train_ratio']:6.2f}"
            f" {row['eval'].total:7d} {row['eval_ratio']:6.2f}"
        )
        if args.top:
            for step in ("train", "eval"):
                common = ", ".join(f"{op} {n}" for op, n in row[step].counts.most_common(args.top))
                print(f"{'':28s} {step}: {common}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
