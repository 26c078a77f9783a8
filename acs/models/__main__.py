"""`python -m acs.models [PATTERN]`: the registered models with parameters and reference MACs."""
import argparse

import torch

from acs.models import create_model, list_models

IMAGENET_SHAPED = ("g_resnext50", "g_resnext101")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'densenet*'")
    parser.add_argument("--gate", default="acs", help="gate of the gateable models (acs, none)")
    args = parser.parse_args()
    torch.manual_seed(0)  # DGConv gates start random: a fixed seed makes the table reproducible
    print(f"| model | input | parameters | dense MACs | MACs at init (gate={args.gate}) |")
    print("|---|---|---:|---:|---:|")
    for name in list_models(args.pattern):
        size = (3, 224, 224) if name in IMAGENET_SHAPED else (3, 32, 32)
        try:
            model = create_model(name, gate=args.gate)
        except TypeError:  # a family without per-sample gates
            model = create_model(name)
        model.eval()
        with torch.no_grad():
            macs = model(torch.randn(1, *size)).macs.item()
        params = sum(p.numel() for p in model.parameters())
        dense = model.dense_macs(size)
        print(f"| `{name}` | {size[1]}×{size[2]} | {params / 1e6:.3f} M | {dense / 1e6:,.1f} M | {macs / 1e6:,.1f} M |")


if __name__ == "__main__":
    main()
