"""Model families, registered by name: ``create_model("densenet40", num_classes=10)``."""
from acs.models import (
    densenet,  # noqa: F401  (registers the DenseNets)
    resnext,  # noqa: F401
)
from acs.models.base import AcsModel, Output
from acs.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "AcsModel", "Output", "create_model", "list_models", "register_model"]
