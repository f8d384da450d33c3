"""Inputs of the op tests: one builder per op (one mask builder for word attention), the
backends each test runs, and the helpers that run a call forward and backward.

``backends(op, dtype)``: every backend registered for ``op`` that can run ``dtype`` inputs on the
tests' device (the interpreter runs the triton kernels on the CPU), plus the cuda backend's kernels
under host emulation (``cuda_emulation.py``) on the CPU where they exist; on a GPU the real cuda
kernels instead. A backend registered later is tested without changing a test.
"""

from __future__ import annotations

from collections.abc import Sequence

import cuda_emulation
import pytest
import torch
from torch import Tensor

from attngan_fast.ops import available_backends, registry

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
EMULATED = cuda_emulation.NAME
EMULATED_OPS = ("word_attention", "damsm_word_similarity", "batch_norm_act")
DTYPE_NAMES = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
}


def backends(
    op: str,
    dtype: torch.dtype | None = None,
    *,
    exclude: Sequence[str] = (),
    emulated: bool = True,
    device: str = DEVICE,
) -> list[str]:
    """The backends of ``op`` a test runs (see the module docstring), ``exclude`` left out."""
    names = [b for b in available_backends(op, device, dtype) if b not in exclude]
    emulate = emulated and device == "cpu" and op in EMULATED_OPS and cuda_emulation.possible()
    return names + ([EMULATED] if emulate and EMULATED not in exclude else [])


def backend_dtypes(op: str, dtypes: Sequence[torch.dtype], **kwargs) -> list[pytest.param]:
    """(backend, dtype) parameters: each dtype with every backend that takes it."""
    return [
        pytest.param(b, dt, id=f"{b}-{DTYPE_NAMES[dt]}")
        for dt in dtypes
        for b in backends(op, dt, **kwargs)
    ]


def kernel_backends(op: str, dtype: torch.dtype | None = None, **kwargs) -> list[str]:
    """The backends of ``op`` that run as kernels (custom ops): all but the composite ones
    (``reference``, and e.g. the cpu backend's upsample-conv)."""
    composite = [i.backend for i in registry.implementations(op) if i.composite is not None]
    return backends(op, dtype, exclude=(*composite, *kwargs.pop("exclude", ())), **kwargs)


def kernel_cases(op: str, cases: Sequence[tuple], **kwargs) -> list[pytest.param]:
    """(backend, case) parameters: each case (its last field the dtype) with every fast kernel
    backend of ``op`` that takes its dtype (the torch and reference backends left out)."""
    return [
        pytest.param(b, case, id=f"{b}-{'x'.join(map(str, case[:-1]))}")
        for case in cases
        for b in kernel_backends(op, case[-1], exclude=("torch",), **kwargs)
    ]


def parity_reference(backend: str) -> str:
    """The same-dtype backend whose error bounds ``backend``'s (the parity rule): the torch
    backend, and for the torch backend itself the reference backend."""
    return "reference" if backend == "torch" else "torch"


def rounding_dtype(backend: str, output: torch.dtype, inputs: torch.dtype) -> torch.dtype:
    """The dtype in whose units ``backend``'s output may be off beyond the parity rule's twice:
    the output's own, except for the reference backend (PyTorch's own half-precision BatchNorm
    backward rounds the float32 parameters' gradients to the inputs' dtype once)."""
    return inputs if backend == "reference" else output


# --- running a call -----------------------------------------------------------------------------


def leaves(*tensors: Tensor | None, to: torch.dtype | None = None) -> list[Tensor | None]:
    """Fresh copies requiring grad (cast to ``to``), None kept."""
    return [
        None if t is None else t.detach().to(to or t.dtype).clone().requires_grad_()
        for t in tensors
    ]


def grads(outputs: Sequence[Tensor], inputs: Sequence[Tensor], upstream: Sequence[Tensor]):
    """Gradients of ``sum(output * upstream)`` (in float64) with respect to ``inputs``."""
    loss = sum((o.double() * g.double()).sum() for o, g in zip(outputs, upstream))
    return list(torch.autograd.grad(loss, list(inputs)))


# --- word_attention -----------------------------------------------------------------------------


def word_mask(
    batch: int, words: int, kind: str | Sequence[int] | None, device: str = DEVICE
) -> Tensor | None:
    """B x T bool, True = padding: None; ``"random"`` (each word with probability 1/2);
    ``"one_valid"`` (one random word per sample); ``"empty_rows"`` (sample 0 all padding, word 0
    valid elsewhere); or the lengths of the captions (word t of sample b padded for t >= length)."""
    if kind is None:
        return None
    if not isinstance(kind, str):
        return torch.arange(words)[None, :].ge(torch.tensor(kind)[:, None]).to(device)
    mask = torch.rand(batch, words) < 0.5
    if kind == "one_valid":
        mask = torch.ones(batch, words, dtype=torch.bool)
        mask[torch.arange(batch), torch.randint(0, words, (batch,))] = False
    elif kind == "empty_rows":
        mask[0] = True
        mask[1:, 0] = False
    elif kind != "random":
        raise ValueError(f"unknown mask kind {kind!r}")
    return mask.to(device)


def attention_inputs(
    batch: int,
    channels: int,
    regions: int,
    words: int,
    dtype: torch.dtype = torch.float32,
    *,
    channels_innermost: bool = False,
    device: str = DEVICE,
) -> tuple[Tensor, Tensor]:
    """query B x C x N (``channels_innermost``: a channels-last map flattened to B x C x (H W),
    not copied) and source B x C x T."""
    query = torch.randn(batch, channels, regions, device=device).to(dtype)
    if channels_innermost:
        query = query.transpose(1, 2).contiguous().transpose(1, 2)
    source = torch.randn(batch, channels, words, device=device).to(dtype)
    return query, source


# --- damsm --------------------------------------------------------------------------------------


def damsm_inputs(
    batch: int,
    dim: int,
    height: int,
    width: int,
    words: int,
    dtype: torch.dtype = torch.float32,
    device: str = DEVICE,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """img_local B x D x H x W, img_global B x D, words B x D x T, sent B x D, cap_lens B (the
    first caption one word long, the last T)."""
    lens = torch.randint(1, words + 1, (batch,))
    lens[0], lens[-1] = 1, words
    return (
        torch.randn(batch, dim, height, width, device=device).to(dtype),
        torch.randn(batch, dim, device=device).to(dtype),
        torch.randn(batch, dim, words, device=device).to(dtype),
        torch.randn(batch, dim, device=device).to(dtype),
        lens.to(device),
    )


# --- the image ops ------------------------------------------------------------------------------


def _placed(t: Tensor, layout: str) -> Tensor:
    """``t`` (4-D for channels_last) in ``layout``: contiguous, channels_last, or misaligned (a
    contiguous view one element into its storage: the cuda kernels' scalar path)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "misaligned":
        flat = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)[1:]
        return flat.copy_(t.reshape(-1)).view(t.shape)
    return t.contiguous()


def conv_inputs(
    batch: int,
    cin: int,
    cout: int,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    device: str = DEVICE,
) -> tuple[Tensor, Tensor, Tensor]:
    """x B x Cin x H x W, weight Cout x Cin x 3 x 3 (scaled to keep the output O(1)), grad_y."""
    x = _placed(torch.randn(batch, cin, height, width, device=device).to(dtype), layout)
    weight = (torch.randn(cout, cin, 3, 3, device=device) / (3 * cin**0.5)).to(dtype)
    grad_y = torch.randn(batch, cout, 2 * height, 2 * width, device=device).to(dtype)
    return x, weight, _placed(grad_y, layout)


def bn_params(channels: int, affine: bool = True, device: str = DEVICE):
    """weight, bias (float32, or None without affine) and running (mean, var) of C channels."""
    weight = torch.randn(channels, device=device) * 0.3 + 1 if affine else None
    bias = torch.randn(channels, device=device) * 0.2 if affine else None
    running = (
        torch.randn(channels, device=device) * 0.1,
        torch.rand(channels, device=device) + 0.5,
    )
    return weight, bias, running


def bn_inputs(
    shape: Sequence[int],
    mode: str,
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    affine: bool = True,
    device: str = DEVICE,
):
    """x, residual (mode "add") or None, weight, bias, (running_mean, running_var), grad_y."""
    x = _placed((torch.randn(*shape, device=device) * 1.5 + 0.7).to(dtype), layout)
    residual = (
        _placed(torch.randn(*shape, device=device).to(dtype), layout) if mode == "add" else None
    )
    weight, bias, running = bn_params(shape[1], affine, device)
    y_shape = (shape[0], shape[1] // 2 if mode == "glu" else shape[1], *shape[2:])
    grad_y = _placed(torch.randn(*y_shape, device=device).to(dtype), layout)
    return x, residual, weight, bias, running, grad_y


def up_block_inputs(
    batch: int,
    cin: int,
    c2: int,
    side: int,
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    affine: bool = True,
    device: str = DEVICE,
):
    """x B x Cin x side x (side + 1), conv_weight 2C x Cin x 3 x 3, weight, bias, running,
    grad_y B x C x 2 side x 2 (side + 1)."""
    x, conv_weight, _ = conv_inputs(batch, cin, c2, side, side + 1, dtype, layout, device)
    x = _placed(x + 0.3, layout)
    weight, bias, running = bn_params(c2, affine, device)
    grad_y = torch.randn(batch, c2 // 2, 2 * side, 2 * side + 2, device=device).to(dtype)
    return x, conv_weight, weight, bias, running, _placed(grad_y, layout)
