"""Compile Triton kernels for sm_90 (H100) or sm_80 (A100) on a machine without a GPU, and read
their resource usage.

The interpreter that runs the CPU parity tests accepts programs the GPU compiler rejects (and
says nothing of registers or shared memory). These helpers compile a kernel ahead of time with
Triton's bundled ptxas (``GPUTarget("cuda", arch, 32)``) in a fresh interpreter without
``TRITON_INTERPRET``, and report per kernel: shared memory (bytes), registers per thread and
spill stack (bytes per thread) from ``cuobjdump -res-usage``.

A test writes a script body that calls ``aot_compile(label, fn, consts, ptr_types, ...)``
for each kernel variant, and ``run_aot_script(body, arch)`` returns the list of result dicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import triton

PRELUDE = r'''
import json, os, re, subprocess, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
RESULTS = []
ARCH = int(os.environ["AOT_ARCH"])


def aot_compile(label, fn, consts, ptr_types, float_args=(), divisible=(), options=None,
                **meta):
    """Compile ``fn`` (a @triton.jit function) with these constexprs for sm_ARCH; the result
    (label, shared, regs, stack, and the ``meta`` fields) is appended to RESULTS.

    ptr_types: Triton type of each ``*_ptr`` argument, e.g. {"x_ptr": "bf16"}; the key "*" is
    the default. float_args: scalar arguments passed as fp32 (others are i32). divisible:
    integer arguments promised to be multiples of 16 (as Triton's launcher specialises them).
    """
    sig = {}
    for name in fn.arg_names:
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + ptr_types.get(name, ptr_types["*"])
        else:
            sig[name] = "fp32" if name in float_args else "i32"
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if name in divisible or sig[name].startswith("*")}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", ARCH, 32), options=options or {})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([CUOBJDUMP, "-res-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
    RESULTS.append({
        "label": label,
        "shared": kernel.metadata.shared,
        "regs": int(re.search(r"REG:(\d+)", usage).group(1)),
        "stack": int(re.search(r"STACK:(\d+)", usage).group(1)),
        **meta,
    })


def autotune_options(config):
    return {"num_warps": config.num_warps, "num_stages": config.num_stages}
'''

EPILOGUE = "\nprint(json.dumps(RESULTS))\n"

ARCHS = (90, 80)  # the GPUs the checks compile for: H100, A100
# Spill bytes a thread may have where a test asks for none: none under the newest Triton; one
# register pair (8 bytes, L1-resident) under the older releases CI also runs (3.6, 3.8), whose
# register allocators spill that much in a few configs (benchmarks/NOTES.md, "Triton versions").
SPILL_SLACK = 0 if tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 9) else 8
MAX_SHARED = {90: 227 * 1024, 80: 163 * 1024}  # bytes of shared memory one block may use
MAX_REGS = 255


def run_aot_script(body: str, arch: int = 90) -> list[dict]:
    """Run PRELUDE + ``body`` in a fresh interpreter with compiled (not interpreted) Triton for
    sm_``arch`` and return its results. Skips where Triton has no bundled CUDA toolchain
    (cuobjdump, ptxas)."""
    import triton

    nvidia = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not os.path.exists(os.path.join(nvidia, "cuobjdump")):
        pytest.skip("this Triton has no bundled CUDA toolchain (cuobjdump, ptxas)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["AOT_ARCH"] = str(arch)
    script = PRELUDE + body + EPILOGUE
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fits(result: dict, arch: int) -> bool:
    """The kernel fits one block of sm_``arch``: shared memory and registers within its limits."""
    return result["shared"] <= MAX_SHARED[arch] and result["regs"] <= MAX_REGS


def assert_fits(results: list[dict], arch: int = 90) -> None:
    """Every kernel fits a block of sm_``arch``."""
    assert results
    for r in results:
        assert fits(r, arch), (arch, r)
