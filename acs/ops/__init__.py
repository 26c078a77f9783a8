"""Operators: the dynamic grouping convolution and its helpers."""
from acs.ops.binary import ESTIMATORS, binarize_ste, binary_keep, check_estimator, logistic_noise
from acs.ops.dgconv import DGConv2d, prepared_dgconvs, shared_factors_of_two
from acs.ops.permute import ChannelPermute, PermutedGroupConv2d

__all__ = [
    "ChannelPermute",
    "PermutedGroupConv2d",
    "DGConv2d",
    "ESTIMATORS",
    "binarize_ste",
    "binary_keep",
    "check_estimator",
    "logistic_noise",
    "prepared_dgconvs",
    "shared_factors_of_two",
]
