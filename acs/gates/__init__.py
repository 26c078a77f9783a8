"""Gates: per-sample channel keep-masks behind one interface (``create_gate(name, in, k)``)."""
from acs.gates.acs_gate import ACSGate
from acs.gates.base import Gate, GateSpec, create_gate, list_gates, register_gate, run_gate

__all__ = ["ACSGate", "Gate", "GateSpec", "create_gate", "list_gates", "register_gate", "run_gate"]
