"""Run reporting: experiment loggers (W&B or none) and the accuracy-vs-compute sweep report."""
from .jobs import JobResult, ReportError, collect_jobs
from .keep_rates import write_keep_profiles, write_keep_rates
from .pareto import pareto_front
from .run_logger import RunLogger, WandbLogger, create_logger
from .sweep_report import Report, write_report
from .wandb_run import job_name, log_evaluation, log_run_end
from .wandb_sweep import log_sweep_summary

__all__ = [
    "JobResult",
    "Report",
    "ReportError",
    "RunLogger",
    "WandbLogger",
    "collect_jobs",
    "create_logger",
    "job_name",
    "log_evaluation",
    "log_run_end",
    "log_sweep_summary",
    "pareto_front",
    "write_keep_profiles",
    "write_keep_rates",
    "write_report",
]
