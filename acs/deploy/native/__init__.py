"""The DenseNet executor's fused CPU kernels (``executor.cpp``): one call per dense block, its
layers' ACS gates included (``torch.ops.acs.dense_block``; ``torch.ops.acs.dense_layer`` per layer
where another gate design runs before the layer), one per transition (``torch.ops.acs.transition``)
and one for the classifier (``torch.ops.acs.head``), instead of a few dozen small tensor operations
per layer, whose per-call overhead dominates at batch 1.

Compiled on first use with the C++ compiler that :mod:`torch.utils.cpp_extension` finds (about
15 s), then cached in its build folder (``TORCH_EXTENSIONS_DIR``, by default under
``~/.cache/torch_extensions``) and reused while the source is unchanged. :func:`load` registers
the operators' FLOP formulas with :mod:`torch.utils.flop_counter`, computed from the operands
(live inputs, kept outputs, weight shapes) as ``aten.mm``'s is from its shapes, so that a FLOP
counter run on the executor still sees every multiply-accumulate it executes.

The built library needs only libtorch: :func:`library` is its file, which ``python -m acs.deploy``
ships beside a TorchScript file calling the operators, for ``torch.ops.load_library``. A process
loads one library registering the ``acs`` operators at most (a second aborts it): :func:`load`
declines where another one was loaded first.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from torch.utils.flop_counter import register_flop_formula

_SOURCE = Path(__file__).with_name("executor.cpp")
_error: Optional[str] = None  # why the build failed, once it has
_loaded = False
_library: Optional[Path] = None  # the file loaded, and its os.stat then (identity, size, time)
_library_stat: Optional[tuple] = None


class NativeUnavailable(RuntimeError):
    """The fused kernels could not be built or loaded here (no C++ compiler, a failed build)."""


def load() -> None:
    """Builds (once per machine and source) and loads the kernels; raises NativeUnavailable, with
    the reason, where that fails. Cheap after the first call."""
    global _error, _loaded, _library, _library_stat
    if _loaded:
        return
    if _error is None and _registered():
        # By a deployed folder's copy (torch.ops.load_library): loading ours would abort the process.
        others = ", ".join(sorted(torch.ops.loaded_libraries)) or "a library loaded outside torch.ops"
        _error = f"the acs operators are already registered, by {others}"
    if _error is None:
        try:
            # cpp_extension warns at import that it finds no CUDA, which is irrelevant to a CPU build.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils.cpp_extension import load as build

            _find_ninja()
            before = set(torch.ops.loaded_libraries)
            build(name="acs_native", sources=[str(_SOURCE)], extra_cflags=["-O3"], is_python_module=False)
            # cpp_extension loads the library with torch.ops.load_library, which records its path
            # (a versioned name in a build folder that TORCH_EXTENSIONS_DIR, Python and CUDA decide).
            (path,) = set(torch.ops.loaded_libraries) - before
            _library, _library_stat = Path(path), _identity(Path(path))
        except Exception as error:  # a missing compiler or a failed build: the reason, kept for every caller
            reason = error.__cause__ or error  # a failed load names the library; its cause says why
            lines = str(reason).strip().splitlines() or [""]
            _error = f"{type(reason).__name__}: {lines[0][:300]}"
        else:
            _register_flop_formulas()
            _loaded = True
            return
    raise NativeUnavailable(f"the executor's native kernels are unavailable ({_error})")


def _registered() -> bool:
    return hasattr(torch.ops.acs, "dense_layer")


def library() -> Path:
    """The shared library file the kernels were loaded from (loading them first); raises
    NativeUnavailable where they are not, or where the file was rebuilt since (by another process
    of another acs version sharing the build folder)."""
    load()
    if _identity(_library) != _library_stat:
        raise NativeUnavailable(f"the native kernels' library {_library} was rebuilt since this process loaded it")
    return _library


def _identity(path: Path) -> Optional[tuple]:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _find_ninja() -> None:
    """cpp_extension runs ``ninja`` from PATH; the ``ninja`` package installed with acs puts it in
    the environment's scripts folder, which is not on PATH when the interpreter of a virtual
    environment is run without activating it."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return  # the build then fails with cpp_extension's own message
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def available() -> bool:
    """Whether the kernels load here (building them if needed)."""
    try:
        load()
    except NativeUnavailable:
        return False
    return True


def _layer_macs(n, kept, height, width, w1, w2, in_idx, reduce, wa, wb, wh, gate_convs) -> int:
    """The MACs of one dense layer with ``n`` live inputs and ``kept`` outputs, its ACS gate (``reduce``
    etc., or None) included, from its operands' shapes."""
    macs = 0
    if reduce is not None:  # the ACS gate, on the stride-2 map of the n live inputs
        ka, sa, pa, kb, sb, pb = gate_convs
        rows, cols = (height + 1) // 2, (width + 1) // 2
        macs += n * reduce.shape[1] * rows * cols
        rows, cols = (rows + 2 * pa - ka) // sa + 1, (cols + 2 * pa - ka) // sa + 1
        macs += wa.numel() * rows * cols
        rows, cols = (rows + 2 * pb - kb) // sb + 1, (cols + 2 * pb - kb) // sb + 1
        macs += wb.numel() * rows * cols + wh.numel()
    if kept == 0:
        return macs
    pixels, inputs = height * width, n
    if w1 is not None:  # the 1×1 bottleneck over the live inputs
        inputs = w1.shape[1]
        macs += n * inputs * pixels
    per_output = in_idx.shape[1] if in_idx is not None else inputs
    return macs + kept * 9 * per_output * pixels


def _growth(w2, in_idx) -> int:
    return w2.shape[0] if in_idx is not None else w2.shape[1]


def _register_flop_formulas() -> None:
    @register_flop_formula(torch.ops.acs.dense_layer, get_raw=True)
    def dense_layer_flops(feat, summary, alive, n, offset, reads, height, width, keep, factor, bn, w1, b1, c1, w2,
                          table, in_idx, reduce, wa, ba, mid, wb, wh, bh, gate_convs, out_val=None,
                          **kwargs) -> int:  # fmt: skip
        kept = int(alive[offset : offset + _growth(w2, in_idx)].sum())  # the decision, written by the call
        return 2 * _layer_macs(n, kept, height, width, w1, w2, in_idx, reduce, wa, wb, wh, gate_convs)

    @register_flop_formula(torch.ops.acs.dense_block, get_raw=True)
    def dense_block_flops(x, height, width, reads, channels, in_channels, buffers, gate_convs, out_val=None,
                          **kwargs) -> int:  # fmt: skip
        alive = out_val[1]  # the block's liveness, as its layers decided it
        macs = 0
        for layer, offset in enumerate(in_channels):
            bn, w1, b1, c1, w2, table, in_idx, reduce, wa, ba, mid, wb, wh, bh = buffers[14 * layer : 14 * layer + 14]
            n, kept = int(alive[:offset].sum()), int(alive[offset : offset + _growth(w2, in_idx)].sum())
            macs += _layer_macs(n, kept, height, width, w1, w2, in_idx, reduce, wa, wb, wh, gate_convs)
        return 2 * macs

    @register_flop_formula(torch.ops.acs.transition, get_raw=True)
    def transition_flops(x, height, width, alive, bn, weight, dead_bias, pool, out_val=None, **kwargs) -> int:
        return 2 * x.shape[0] * weight.shape[1] * height * width  # the 1×1 conv over the live inputs

    @register_flop_formula(torch.ops.acs.head, get_raw=True)
    def head_flops(x, alive, bn, weight, bias, dead_bias, out_val=None, **kwargs) -> int:
        return 2 * x.shape[0] * weight.shape[1]  # the linear layer over the live channels


__all__ = ["NativeUnavailable", "available", "library", "load"]
