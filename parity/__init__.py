"""Parity suite: the MindSpore port vs torchvision on shared weights, against a measured noise floor."""
from .bugs import BUGS
from .compare import CheckResult, format_table
from .suite import CHECKS, ParityConfig, ParityReport, run_parity
from .training import REGIMES, TRAIN_BUGS

__all__ = ["BUGS", "CHECKS", "REGIMES", "TRAIN_BUGS", "CheckResult", "ParityConfig", "ParityReport",
           "format_table", "run_parity"]
