"""ACS: Adaptive Channel Skipping with gate networks (ACS-GN) and dynamic grouping convolution (ACS-DG)."""
from acs.models import AcsModel, Output, create_model, list_models, register_model

__version__ = "0.1.0"
__all__ = ["AcsModel", "Output", "create_model", "list_models", "register_model"]
