"""The backend switch: argument > ATTNGAN_FAST_BACKEND > automatic, with clear errors."""

import pytest
import torch

from attngan_fast import ops
from attngan_fast.ops import _backend


def test_cpu_default_is_the_reference(monkeypatch):
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)
    for op in _backend.OPS:
        assert _backend.resolve_backend(op, None, torch.device("cpu")) == "torch"
        assert "torch" in ops.available_backends(op, "cpu")


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv(_backend.ENV_VAR, "cuda")
    assert _backend.resolve_backend("word_attention", "torch", torch.device("cpu")) == "torch"
    with pytest.raises(ops.BackendUnavailableError, match="cuda backend runs on CUDA tensors"):
        _backend.resolve_backend("word_attention", None, torch.device("cpu"))


def test_unknown_backend_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="'fast' is not a backend"):
        ops.upsample_conv3x3(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3), backend="fast")
    monkeypatch.setenv(_backend.ENV_VAR, "nope")
    with pytest.raises(ValueError, match="ATTNGAN_FAST_BACKEND'nope' is not a backend"):
        ops.upsample_conv3x3(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3))


def test_unavailable_backend_says_what_is_missing():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ops.BackendUnavailableError, match="word_attention: backend 'cuda'"):
        ops.word_attention(x, x, None, backend="cuda")


def test_every_public_op_accepts_backend_torch():
    x = torch.randn(2, 4, 3, 3)
    ops.upsample_conv3x3(x, torch.randn(2, 4, 3, 3), backend="torch")
    ops.batch_norm_glu(x, None, None, None, None, True, 0.1, 1e-5, backend="torch")
    ops.batch_norm_add(x, x, None, None, None, None, True, 0.1, 1e-5, backend="torch")
    ops.word_attention(x.flatten(2), torch.randn(2, 4, 5), None, backend="torch")
    ops.damsm_loss(x, x[:, :, 0, 0], torch.randn(2, 4, 5), x[:, :, 0, 0], torch.tensor([5, 2]),
                   None, 4.0, 5.0, 10.0, backend="torch")  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is usable here")
def test_no_backend_listed_for_cuda_without_a_gpu():
    for op in _backend.OPS:
        assert ops.available_backends(op, "cuda") == [], op
        assert ops.available_backends(op, torch.device("cuda", 0)) == [], op


def test_backend_of_another_type_is_a_type_error():
    x = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="backend= must be a string.*got int 123"):
        ops.word_attention(x, x, None, backend=123)


def test_empty_environment_variable_means_automatic(monkeypatch):
    x = torch.randn(2, 3, 4)
    for value in ("", "  "):
        monkeypatch.setenv(_backend.ENV_VAR, value)
        assert _backend.resolve_backend("word_attention", None, torch.device("cpu")) == "torch"
        ops.word_attention(x, x, None)
