"""The op registry: which implementation runs a call (argument > ``use_backend`` >
``ATTNGAN_FAST_BACKEND`` > automatic), capability predicates and their fall-through, clear errors,
registration, and the choice under ``torch.compile(fullgraph=True)``."""

from __future__ import annotations

import importlib

import pytest
import torch

from attngan_fast import ops
from attngan_fast.ops import cuda_ext, registry

wa = importlib.import_module("attngan_fast.ops.word_attention")
OPS = registry.op_names()


@pytest.fixture(autouse=True)
def _no_env_choice(monkeypatch):
    monkeypatch.delenv(registry.ENV_VAR, raising=False)


def _probe(calls: list, name: str, **kwargs):
    """A kernel implementation of word_attention (the torch kernels) that records its calls."""

    def forward(*args):
        calls.append(name)
        return wa.word_attention_forward(*args)

    return registry.registered(
        "word_attention", name, forward=forward, backward=wa.word_attention_backward, **kwargs
    )


def short(call: registry.Call) -> str | None:
    """A predicate on a shape: captions of at most 4 words (any, when the call gives no shape)."""
    source = call.shape("source")
    return None if source is None or source[2] <= 4 else "T > 4"


def _attention(batch=2, words=4):
    return torch.randn(batch, 3, 5), torch.randn(batch, 3, words)


# --- the order of the choices -------------------------------------------------------------------


CPU_BACKEND_OPS = {
    "batch_norm_act",
    "upsample_conv3x3",
    "upsample_conv3x3_bn_glu",
    "word_attention",
    "damsm_word_similarity",
}


def test_cpu_default_is_the_cpu_backend_else_torch():
    for op in OPS:
        first = ["cpu"] if op in CPU_BACKEND_OPS else []
        assert ops.resolve_backend(op, "cpu") == [*first, "torch"][0], op
        want = [*first, "torch", "reference"]
        assert ops.available_backends(op, "cpu")[: len(want)] == want, op


def test_argument_beats_use_backend_beats_environment(monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, "cuda")
    with pytest.raises(ops.BackendUnavailableError, match=r"runs on CUDA tensors.*ATTNGAN_FAST"):
        ops.resolve_backend("word_attention", "cpu")
    assert ops.resolve_backend("word_attention", "cpu", backend="torch") == "torch"
    with ops.use_backend("reference"):
        assert ops.resolve_backend("word_attention", "cpu") == "reference"
        assert ops.resolve_backend("word_attention", "cpu", backend="torch") == "torch"
    with ops.use_backend("auto"):
        assert ops.resolve_backend("word_attention", "cpu") == "cpu"


def test_use_backend_nests_per_op_and_per_thread():
    import threading

    seen = {}
    with ops.use_backend("reference"):
        with ops.use_backend(batch_norm_act="torch"):
            assert ops.resolve_backend("batch_norm_act") == "torch"
            assert ops.resolve_backend("word_attention") == "reference"  # the outer block
            thread = threading.Thread(
                target=lambda: seen.update(b=ops.resolve_backend("word_attention"))
            )
            thread.start()
            thread.join()
        with ops.use_backend("torch", word_attention="reference"):
            assert ops.resolve_backend("word_attention") == "reference"
            assert ops.resolve_backend("upsample_conv3x3") == "torch"
    assert seen["b"] == "cpu"  # another thread: no block, the automatic choice
    assert ops.resolve_backend("word_attention") == "cpu"


@pytest.mark.parametrize("value", ["", "  ", "auto", "AUTO"])
def test_empty_or_auto_environment_variable_means_automatic(monkeypatch, value):
    monkeypatch.setenv(registry.ENV_VAR, value)
    assert ops.resolve_backend("word_attention", "cpu") == "cpu"
    ops.word_attention(*_attention(), None)


def test_environment_variable_chooses(monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, " Reference ")
    calls = []
    with _probe(calls, "probe"):
        monkeypatch.setenv(registry.ENV_VAR, "probe")
        ops.word_attention(*_attention(), None)
    assert calls == ["probe"]


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_backend_names_the_choices(monkeypatch):
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3)
    with pytest.raises(
        ValueError, match=r"backend=: 'fast' is not a backend; choose one of .*torch"
    ):
        ops.upsample_conv3x3(x, w, backend="fast")
    monkeypatch.setenv(registry.ENV_VAR, "nope")
    with pytest.raises(ValueError, match="ATTNGAN_FAST_BACKEND: 'nope' is not a backend"):
        ops.upsample_conv3x3(x, w)
    with pytest.raises(ValueError, match="'nope' is not a backend"), ops.use_backend("nope"):
        pass
    with pytest.raises(ValueError, match="no op 'conv'"), ops.use_backend(conv="torch"):
        pass


def test_backend_of_another_type_is_a_type_error():
    x = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="backend= must be a backend name.*got int 123"):
        ops.word_attention(x, x, None, backend=123)


def test_a_backend_without_the_op_says_which_have_it():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(4, 2, 3, 3)
    with pytest.raises(
        ops.BackendUnavailableError, match=r"no upsample_conv3x3 implementation.*torch"
    ):
        ops.upsample_conv3x3(x, w, backend="cuda")
    with pytest.raises(
        ops.BackendUnavailableError, match="upsample_conv3x3_bn_glu: backend 'cuda'"
    ):
        ops.upsample_conv3x3_bn_glu(x, w, None, None, None, None, True, 0.1, 1e-5, backend="cuda")


def test_cuda_on_cpu_tensors_is_refused_by_name():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ops.BackendUnavailableError, match="word_attention: backend 'cuda'.*CUDA"):
        ops.word_attention(x, x, None, backend="cuda")
    with pytest.raises(ops.BackendUnavailableError, match="batch_norm_act: backend 'cuda'"):
        ops.batch_norm_glu(x[:, :2], None, None, None, None, True, 0.1, 1e-5, backend="cuda")


def test_a_backend_that_failed_to_load_says_why(monkeypatch):
    monkeypatch.setitem(
        registry._LOAD_ERRORS, "metal", "attngan_fast.ops.metal could not be imported"
    )
    monkeypatch.setattr(registry, "_NAMES", [*registry._NAMES, "metal"])
    with pytest.raises(ops.BackendUnavailableError, match="metal could not be imported"):
        ops.word_attention(*_attention(), None, backend="metal")


# --- capability predicates: the automatic choice falls through ---------------------------------


def test_automatic_choice_takes_the_first_backend_that_supports_the_call():
    calls = []
    with _probe(calls, "short", supports=short, preference={"cpu": 0}):
        with _probe(
            calls,
            "f32",
            supports=lambda c: None if c.dtype == torch.float32 else "f32",
            preference={"cpu": 1},
        ):
            ops.word_attention(*_attention(words=4), None)
            ops.word_attention(*_attention(words=6), None)
            q, s = _attention(words=6)
            ops.word_attention(q.double(), s.double(), None)
            assert ops.available_backends("word_attention", "cpu")[:3] == ["short", "f32", "cpu"]
            assert ops.available_backends("word_attention", "cpu", torch.float64)[0] == "short"
            with pytest.raises(
                ops.BackendUnavailableError, match="'short' is not available: T > 4"
            ):
                ops.word_attention(*_attention(words=6), None, backend="short")
    assert calls == ["short", "f32"]  # and float64 with T = 6 fell through to cpu
    assert "short" not in registry.backend_names("word_attention")


def test_a_cuda_device_without_a_gpu_falls_through_to_torch(monkeypatch):
    monkeypatch.setattr(registry, "cuda_usable", lambda: False)
    for op in OPS:
        assert ops.resolve_backend(op, "cuda") == "torch", op
        available = ops.available_backends(op, "cuda")
        assert "triton" not in available and "cuda" not in available, op
    why = registry.implementation("word_attention", "triton").supports(
        registry.typical_call("cuda")
    )
    assert "no usable CUDA GPU" in why


@pytest.fixture
def gpu_here(monkeypatch):
    """A machine that looks like one with an sm_90 GPU and a built ``_C`` (predicates only)."""
    monkeypatch.setattr(registry, "cuda_usable", lambda: True)
    capability = {"sm": 90}
    monkeypatch.setattr(registry, "_capability", lambda index: capability["sm"])
    monkeypatch.setattr(cuda_ext, "_extension_missing", lambda: "")
    return capability


def _call(dtype=torch.float32, **shapes):
    return registry.Call(torch.device("cuda"), dtype, shapes)


def test_float64_on_cuda_falls_through_past_triton(gpu_here):
    assert registry.choose("word_attention", _call()).backend == "triton"
    assert registry.choose("word_attention", _call(torch.float64)).backend == "cuda"
    assert registry.choose("damsm_word_similarity", _call(torch.float64)).backend == "cuda"
    assert registry.choose("batch_norm_act", _call(torch.float64)).backend == "triton"
    with pytest.raises(ops.BackendUnavailableError, match="float32, bfloat16 or float16"):
        registry.choose("word_attention", _call(torch.float64), "triton")


def test_cuda_damsm_kernel_takes_at_most_32_words(gpu_here):
    gpu_here["sm"] = 75  # tf32x3: triton steps aside, so the cuda kernel would be next
    assert registry.choose("damsm_word_similarity", _call(words=(4, 8, 32))).backend == "cuda"
    long = _call(img_local=(4, 8, 9), words=(4, 8, 33))
    assert registry.choose("damsm_word_similarity", long).backend == "torch"
    with pytest.raises(ops.BackendUnavailableError, match=r"at most 32 words a caption \(T = 33\)"):
        registry.choose("damsm_word_similarity", long, "cuda")


def test_pre_sm80_gpus_skip_the_tf32x3_kernels(gpu_here):
    gpu_here["sm"] = 75
    assert registry.choose("word_attention", _call()).backend == "cuda"
    assert registry.choose("upsample_conv3x3", _call(torch.bfloat16)).backend == "torch"
    assert registry.choose("upsample_conv3x3", _call(torch.float16)).backend == "triton"
    with pytest.raises(
        ops.BackendUnavailableError, match=r"compute capability 8.0 or newer \(this one is 7.5\)"
    ):
        registry.choose("word_attention", _call(), "triton")


# --- every public op runs on the backend chosen ----------------------------------------------


def _every_public_op():
    x, w = torch.randn(2, 4, 3, 3), torch.randn(4, 4, 3, 3)
    q, s = torch.randn(2, 4, 9), torch.randn(2, 4, 5)
    return {
        "upsample_conv3x3": lambda b: ops.upsample_conv3x3(x, w, backend=b),
        "batch_norm_act": lambda b: (
            ops.batch_norm_glu(x, None, None, None, None, True, 0.1, 1e-5, backend=b)
            + ops.batch_norm_add(x, x, None, None, None, None, True, 0.1, 1e-5, backend=b)[:, :2]
        ),
        "upsample_conv3x3_bn_glu": lambda b: ops.upsample_conv3x3_bn_glu(
            x, w, None, None, None, None, True, 0.1, 1e-5, backend=b
        ),
        "word_attention": lambda b: ops.word_attention(q, s, None, backend=b)[0],
        "damsm_word_similarity": lambda b: torch.stack(
            ops.damsm_loss(
                x,
                x[:, :, 0, 0],
                s,
                x[:, :, 0, 0],
                torch.tensor([5, 2]),
                None,
                4.0,
                5.0,
                10.0,
                backend=b,
            )[:4]
        ),
    }


@pytest.mark.parametrize("op", OPS)
def test_every_public_op_runs_the_backend_chosen(op, monkeypatch):
    """Each backend that can run here is called (and only it), and gives the reference's values
    (fp32 convolutions in IEEE: the triton conv follows ``cudnn.allow_tf32``)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    run = _every_public_op()[op]
    want = run("reference")
    for backend in ops.available_backends(op, "cpu"):
        calls = []
        with monkeypatch.context() as m:
            for impl in registry.implementations(op):
                attr = "composite" if impl.composite is not None else "forward"
                original = getattr(impl, attr)
                spy = lambda *a, _f=original, _b=impl.backend, _c=calls: _c.append(_b) or _f(*a)  # noqa: E731
                m.setattr(impl, attr, spy)
            got = run(backend)
        assert set(calls) == {backend}, (op, backend, calls)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# --- registering --------------------------------------------------------------------------------


def test_registration_is_checked():
    forward, backward = wa.word_attention_forward, wa.word_attention_backward
    with pytest.raises(ValueError, match="no op 'conv'"):
        registry.register("conv", "x", composite=torch.add)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("word_attention", "torch", composite=wa.word_attention_reference)
    with pytest.raises(ValueError, match="give forward and backward, or composite alone"):
        registry.register("word_attention", "x", forward=forward)
    with pytest.raises(ValueError, match="give forward and backward, or composite alone"):
        registry.register(
            "word_attention", "x", forward=forward, backward=backward, composite=torch.add
        )
    with pytest.raises(ValueError, match="give forward, or composite alone"):
        registry.register("upsample_conv3x3_bn_glu", "x", forward=forward, backward=backward)
    with pytest.raises(ValueError, match="lower-case identifiers other than 'auto'"):
        registry.register("word_attention", "auto", composite=torch.add)
    assert "x" not in registry.backend_names()


def test_a_kernel_registration_is_a_custom_op_with_opcheck():
    q = torch.randn(2, 3, 5, requires_grad=True)
    s = torch.randn(2, 3, 4, requires_grad=True)
    with _probe([], "probe") as impl:
        assert (
            registry.custom_op("word_attention", "probe").default._name
            == "attngan_fast::word_attention_probe"
        )
        torch.library.opcheck(impl.forward_op, (q, s, None, True, False))
    with pytest.raises(ops.BackendUnavailableError, match="'probe' is not registered"):
        impl.forward_op(q, s, None, True, False)


# --- the choice under torch.compile -------------------------------------------------------------


def test_fullgraph_compile_traces_the_choice_with_shapes_and_use_backend():
    calls = []
    torch._dynamo.reset()
    with _probe(calls, "short", supports=short, preference={"cpu": 0}):
        fn = torch.compile(lambda q, s: ops.word_attention(q, s, None)[0], fullgraph=True)
        for words in (4, 6, 3, 8):  # the second shape recompiles with dynamic shapes
            q, s = _attention(words=words)
            torch.testing.assert_close(fn(q, s), ops.word_attention_reference(q, s, None)[0])
        assert calls == ["short", "short"]  # T = 4 and T = 3
        with ops.use_backend("torch"):  # a guard of the graph: recompiled for the block
            fn(*_attention(words=4))
        assert calls == ["short", "short"]
        with pytest.raises(Exception, match="'short' is not available: T > 4"):
            torch.compile(
                lambda q, s: ops.word_attention(q, s, None, backend="short")[0], fullgraph=True
            )(*_attention(words=6))
    torch._dynamo.reset()
