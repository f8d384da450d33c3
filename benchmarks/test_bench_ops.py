"""The op microbenchmarks through pytest-benchmark: ``pytest benchmarks/ --benchmark-only``.

On a CUDA GPU: the ``core`` shapes of ``attngan_fast.bench.shapes``, fwd+bwd, fp32 and bf16, for
the eager reference, the original DAMSM loop and every library backend available (``torch``,
``triton``, ``cuda``); ``torch.compile`` rows are left to ``attngan-fast bench`` (compile time).
Each round takes the next of several input sets (together over twice the L2 cache) and ends with
a device synchronisation, so pytest-benchmark's host clock measures the device work.
Without a GPU those cases skip and the tiny CPU shapes run instead (fp32), which checks the
plumbing only. The full tables with roofline columns come from ``attngan-fast bench``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from attngan_fast.bench.ops import implementation, implementations, make_case, pass_callables
from attngan_fast.bench.shapes import TINY_SHAPES, all_shapes
from attngan_fast.bench.timing import cache_bytes, n_input_sets, tensor_bytes

HAS_CUDA = torch.cuda.is_available()
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _impls(op: str, device: str) -> list[str]:
    return [name for name in implementations(op, torch.device(device)) if name != "compiled"]


def _cases(shapes, device: str, dtypes):
    out = []
    for shape, dtype in itertools.product(shapes, dtypes):
        for name in _impls(shape.op, device):
            marks = [pytest.mark.gpu] if device == "cuda" else []
            test_id = f"{shape.op}-{shape.label}-{dtype}-{name}"
            out.append(pytest.param(shape, dtype, name, device, id=test_id, marks=marks))
    return out


GPU_CASES = _cases(all_shapes(("core",)), "cuda", ("fp32", "bf16")) if HAS_CUDA else []
CPU_CASES = _cases(TINY_SHAPES, "cpu", ("fp32",))


def _bench(benchmark, shape, dtype_name, name, device):
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(0)
    first = make_case(shape, DTYPES[dtype_name], device, g)
    n = n_input_sets(tensor_bytes([first.args, first.grads]), cache_bytes(device), 64)
    cases = [first] + [make_case(shape, DTYPES[dtype_name], device, g) for _ in range(n - 1)]
    run, _ = pass_callables(implementation(shape.op, name), "fwd+bwd")
    turn = itertools.cycle(cases)

    def target(case):
        run(case)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for case in cases[:3]:  # warm-up (autotuning, handles, first-call work)
        target(case)
    benchmark.extra_info.update({"op": shape.op, "shape": shape.label, "backend": name})
    rounds = 30 if device.type == "cuda" else 3
    benchmark.pedantic(target, setup=lambda: ((next(turn),), {}), rounds=rounds, iterations=1)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize(("shape", "dtype_name", "name", "device"), GPU_CASES)
def test_op_gpu(benchmark, shape, dtype_name, name, device):
    _bench(benchmark, shape, dtype_name, name, device)


@pytest.mark.parametrize(("shape", "dtype_name", "name", "device"), CPU_CASES)
def test_op_cpu_tiny(benchmark, shape, dtype_name, name, device):
    _bench(benchmark, shape, dtype_name, name, device)
