"""Cost model: exact, differentiable per-sample MACs (FLOPs = 2·MACs)."""
from acs.cost.macs import MACS_DTYPE, Live, MacMeter, connectivity, conv_output_size, layer_macs

__all__ = ["MACS_DTYPE", "Live", "MacMeter", "connectivity", "conv_output_size", "layer_macs"]
