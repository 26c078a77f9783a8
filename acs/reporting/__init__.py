"""Run reporting: experiment loggers (W&B or none)."""
from .run_logger import RunLogger, WandbLogger, create_logger

__all__ = ["RunLogger", "WandbLogger", "create_logger"]
