"""Gates: per-sample channel keep-masks behind one interface (``create_gate(name, in, k)``)."""
from acs.gates.acs_gate import ACSGate
from acs.gates.base import (
    GATES,
    Gate,
    GateOutput,
    GateSpec,
    LogitGate,
    check_gate,
    create_gate,
    keep_biases,
    list_gates,
    register_gate,
    run_gate,
    summarize,
)
from acs.gates.designs import AIGGate, DDIGate, FBSGate
from acs.gates.static import StaticGate

__all__ = [
    "ACSGate",
    "AIGGate",
    "DDIGate",
    "FBSGate",
    "Gate",
    "GateOutput",
    "GateSpec",
    "LogitGate",
    "StaticGate",
    "GATES",
    "check_gate",
    "create_gate",
    "keep_biases",
    "list_gates",
    "register_gate",
    "run_gate",
    "summarize",
]
