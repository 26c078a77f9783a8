"""Run reporting: experiment loggers (W&B or none) and the accuracy-vs-compute sweep report."""
from .jobs import JobResult, ReportError, collect_jobs
from .pareto import pareto_front
from .run_logger import RunLogger, WandbLogger, create_logger
from .sweep_report import Report, write_report
from .wandb_run import log_run_end
from .wandb_sweep import log_sweep_summary

__all__ = [
    "JobResult",
    "Report",
    "ReportError",
    "RunLogger",
    "WandbLogger",
    "collect_jobs",
    "create_logger",
    "log_run_end",
    "log_sweep_summary",
    "pareto_front",
    "write_report",
]
