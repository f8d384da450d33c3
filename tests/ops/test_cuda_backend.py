"""The ``cuda`` backend (csrc/ kernels in ``attngan_fast._C``) against the float64 reference.

Parity bar: the cuda result's max abs error against the float64 reference is within 2x the error
of the same-dtype ``torch`` backend plus a small slack (relative to the output's scale), for the
outputs and the gradients of every floating input. The GPU tests need a CUDA device and a built
extension; the CPU tests check what a machine without them reports.
"""

from __future__ import annotations

import pytest
import torch
from parity import assert_parity

from attngan_fast import ops
from attngan_fast.ops import _backend, cuda_ext
from attngan_fast.ops.damsm import _damsm_word_similarity_op

CUDA_OPS = ("word_attention", "damsm_word_similarity", "batch_norm_act")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
gpu = pytest.mark.gpu


def _c():
    """The compiled extension (the GPU tests fail, not skip, when it was not built)."""
    from attngan_fast import _C

    return _C


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


def _grads_of(outs, inputs, upstream):
    loss = sum((o.double() * g).sum() for o, g in zip(outs, upstream))
    return torch.autograd.grad(loss, inputs)


# --- CPU: what a machine without the extension or a GPU reports -----------------------------------


@pytest.mark.parametrize("op", CUDA_OPS + ("upsample_conv3x3",))
def test_cpu_tensors_never_list_cuda(op):
    assert "cuda" not in ops.available_backends(op, "cpu")
    why = _backend._why_unavailable(op, "cuda", torch.device("cpu"))
    assert why is not None and "CUDA tensors" in why


def test_backend_cuda_on_cpu_tensors_raises_a_clear_error():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ops.BackendUnavailableError, match="word_attention: backend 'cuda'.*CUDA"):
        ops.word_attention(x, x, None, backend="cuda")
    with pytest.raises(ops.BackendUnavailableError, match="batch_norm_act: backend 'cuda'"):
        ops.batch_norm_glu(x[:, :2], None, None, None, None, True, 0.1, 1e-5, backend="cuda")


@pytest.mark.skipif(
    cuda_ext._C is not None or cuda_ext.why_no_build() is None,
    reason="the extension is built here, or the cuda backend would build it on first use",
)
@pytest.mark.parametrize("op", CUDA_OPS)
def test_missing_extension_is_named(op):
    why = _backend._why_unavailable(op, "cuda", torch.device("cuda"))
    assert "attngan_fast._C is not built" in why
    assert "attngan_fast._C is not built" in getattr(cuda_ext, f"{op}_supported")(
        torch.device("cuda")
    )
    assert "cuda" not in ops.available_backends(op, "cuda")


def test_module_implements_the_contract():
    for op in CUDA_OPS:
        for suffix in ("supported", "forward", "backward"):
            assert callable(getattr(cuda_ext, f"{op}_{suffix}")), (op, suffix)
    why = cuda_ext.upsample_conv3x3_supported(torch.device("cuda"))
    assert "no upsample_conv3x3 kernel" in why


# --- GPU: build -----------------------------------------------------------------------------------


@gpu
def test_extension_is_built_and_chosen():
    _c()
    for op in CUDA_OPS:
        assert "cuda" in ops.available_backends(op, "cuda"), op
    assert "cuda" not in ops.available_backends("upsample_conv3x3", "cuda")


# --- GPU: word_attention --------------------------------------------------------------------------


def _wa_mask(batch, words, kind, device):
    if kind is None:
        return None
    mask = torch.rand(batch, words, device=device) < 0.5
    if kind == "one_valid":  # every sample keeps exactly one word
        mask = torch.ones(batch, words, dtype=torch.bool, device=device)
        mask[torch.arange(batch), torch.randint(0, words, (batch,))] = False
    elif kind == "empty_rows":  # sample 0 has no valid word at all
        mask[0] = True
        mask[1:, 0] = False
    return mask


def _wa_run(backend, query, source, mask, need_attn, legacy, upstream):
    q, s = _leaves(query, source)
    ctx, attn = ops.word_attention(
        q, s, mask, need_attn=need_attn, legacy_mask=legacy, backend=backend
    )
    outs = [ctx] if attn is None else [ctx, attn]
    return [o.detach() for o in outs] + list(_grads_of(outs, (q, s), upstream))


def _wa_check(shape, dtype, mask_kind, need_attn, legacy):
    batch, channels, regions, words = shape
    query = torch.randn(batch, channels, regions, device="cuda").to(dtype)
    source = torch.randn(batch, channels, words, device="cuda").to(dtype)
    mask = _wa_mask(batch, words, mask_kind, "cuda")
    upstream = [torch.randn(batch, channels, regions, dtype=torch.float64, device="cuda")]
    if need_attn:
        upstream.append(torch.randn(batch, words, regions, dtype=torch.float64, device="cuda"))
    fast = _wa_run("cuda", query, source, mask, need_attn, legacy, upstream)
    ref = _wa_run("torch", query, source, mask, need_attn, legacy, upstream)
    exact = _wa_run("torch", query.double(), source.double(), mask, need_attn, legacy, upstream)
    names = ["context", "attn"][: len(upstream)] + ["grad_query", "grad_source"]
    for name, f, r, e in zip(names, fast, ref, exact):
        assert f.dtype == r.dtype and f.shape == r.shape, name
        assert_parity(name, f, r, e)
    return fast


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask_kind", [None, "random", "one_valid", "empty_rows"])
@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("need_attn", [True, False])
def test_word_attention_parity_odd_shapes(dtype, mask_kind, legacy, need_attn):
    _wa_check((3, 5, 37, 7), dtype, mask_kind, need_attn, legacy)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 32, 64 * 64, 18), (2, 48, 128 * 128, 12), (3, 48, 333, 25)])
def test_word_attention_parity_real_shapes(dtype, shape):
    _wa_check(shape, dtype, "random", True, False)


@gpu
@pytest.mark.parametrize("words", [1, 32, 33, 70])
@pytest.mark.parametrize("mask_kind", [None, "random", "empty_rows"])
def test_word_attention_any_number_of_words(words, mask_kind):
    """T > 32 goes through the chunked (two-pass) kernels."""
    _wa_check((2, 6, 200, words), torch.float32, mask_kind, True, False)
    _wa_check((2, 6, 200, words), torch.bfloat16, mask_kind, False, True)


@gpu
def test_word_attention_fully_masked_rows_are_zero():
    query = torch.randn(3, 4, 50, device="cuda")
    source = torch.randn(3, 4, 6, device="cuda")
    mask = _wa_mask(3, 6, "empty_rows", "cuda")
    context, attn = ops.word_attention(query, source, mask, backend="cuda")
    assert torch.all(context[0] == 0) and torch.all(attn[0] == 0)
    assert torch.isfinite(context).all() and torch.isfinite(attn).all()
    _, _, lse = _c().word_attention_forward(query, source, mask, False, False)
    assert torch.isinf(lse[0]).all() and (lse[0] > 0).all() and torch.isfinite(lse[1:]).all()


@gpu
def test_word_attention_stride0_gradient_and_non_contiguous_inputs():
    query = torch.randn(3, 40, 5, device="cuda").transpose(1, 2)  # B x C x N, strided
    source = torch.randn(3, 7, 5, device="cuda").transpose(1, 2)
    mask = _wa_mask(3, 7, "random", "cuda")
    got, ref = [], []
    for backend, out in (("cuda", got), ("torch", ref)):
        q, s = _leaves(query, source)
        context, _ = ops.word_attention(q, s, mask, need_attn=False, backend=backend)
        grad = torch.ones((), device="cuda").expand_as(context)  # stride-0 upstream gradient
        out.extend([context.detach(), *torch.autograd.grad(context, (q, s), grad)])
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    # query has its channels innermost (as a flattened channels-last map): used in place, and
    # context and grad_query come back in its layout
    assert got[0].stride() == query.stride() and got[1].stride() == query.stride()


@gpu
def test_word_attention_channels_last_opcheck():
    feature_map = torch.randn(3, 5, 6, 7, device="cuda").contiguous(
        memory_format=torch.channels_last
    )
    query = feature_map.reshape(3, 5, 42).requires_grad_()
    source = torch.randn(3, 5, 7, device="cuda", requires_grad=True)
    mask = _wa_mask(3, 7, "random", "cuda")
    torch.library.opcheck(
        torch.ops.attngan_fast.word_attention.default, (query, source, mask, True, False, "cuda")
    )


@gpu
def test_word_attention_opcheck():
    query = torch.randn(3, 5, 37, device="cuda", requires_grad=True)
    source = torch.randn(3, 5, 7, device="cuda", requires_grad=True)
    mask = _wa_mask(3, 7, "empty_rows", "cuda")
    for legacy in (False, True):
        torch.library.opcheck(
            torch.ops.attngan_fast.word_attention.default,
            (query, source, mask, True, legacy, "cuda"),
        )
    torch.library.opcheck(
        torch.ops.attngan_fast.word_attention.default, (query, source, None, False, False, "cuda")
    )


@gpu
def test_word_attention_float64_gradcheck():
    query = torch.randn(2, 3, 9, device="cuda", dtype=torch.float64, requires_grad=True)
    source = torch.randn(2, 3, 5, device="cuda", dtype=torch.float64, requires_grad=True)
    mask = _wa_mask(2, 5, "random", "cuda")

    def fn(q, s):
        return ops.word_attention(q, s, mask, backend="cuda")

    assert torch.autograd.gradcheck(fn, (query, source))


# --- GPU: damsm_word_similarity -------------------------------------------------------------------


def _damsm_inputs(batch, dim, regions, words, dtype, lens=None):
    img = torch.randn(batch, dim, regions, device="cuda").to(dtype)
    wrd = torch.randn(batch, dim, words, device="cuda").to(dtype)
    if lens is None:
        lens = torch.randint(1, words + 1, (batch,))
        lens[0], lens[-1] = 1, words  # a one-word caption and a full one
    return img, wrd, torch.as_tensor(lens, device="cuda", dtype=torch.int64)


def _damsm_run(backend, img, wrd, lens, upstream, gammas=(4.0, 5.0)):
    v, e = _leaves(img, wrd)
    sim = _damsm_word_similarity_op(v, e, lens, *gammas, backend)
    return [sim.detach(), *_grads_of([sim], (v, e), [upstream])]


def _damsm_check(batch, dim, regions, words, dtype, lens=None, zero_some=False):
    img, wrd, lens = _damsm_inputs(batch, dim, regions, words, dtype, lens)
    upstream = torch.randn(batch, batch, dtype=torch.float64, device="cuda")
    if zero_some:  # pairs with a zero gradient are skipped by the kernel
        upstream[torch.rand(batch, batch, device="cuda") < 0.5] = 0.0
    fast = _damsm_run("cuda", img, wrd, lens, upstream)
    ref = _damsm_run("torch", img, wrd, lens, upstream)
    exact = _damsm_run("torch", img.double(), wrd.double(), lens, upstream)
    for name, f, r, e in zip(("S", "grad_img_local", "grad_words"), fast, ref, exact):
        assert f.dtype == r.dtype and f.shape == r.shape, name
        assert_parity(name, f, r, e, slack_eps=64)
    valid = torch.arange(words, device="cuda")[None, :] < lens[:, None]
    assert torch.all(fast[2].transpose(1, 2)[~valid] == 0)  # zero beyond each caption


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zero_some", [False, True])
def test_damsm_parity_odd_shapes(dtype, zero_some):
    _damsm_check(5, 19, 35, 7, dtype, zero_some=zero_some)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "words"), [(12, 18), (7, 25), (3, 32)])
def test_damsm_parity_real_shapes(dtype, batch, words):
    _damsm_check(batch, 256, 289, words, dtype)


@gpu
def test_damsm_loss_with_cuda_backend_matches_torch():
    img = torch.randn(6, 32, 5, 5, device="cuda", requires_grad=True)
    glob = torch.randn(6, 32, device="cuda")
    wrd = torch.randn(6, 32, 9, device="cuda", requires_grad=True)
    sent = torch.randn(6, 32, device="cuda")
    lens = torch.tensor([9, 1, 4, 9, 3, 7], device="cuda")
    classes = torch.tensor([0, 1, 0, 2, 1, 3], device="cuda")
    results = []
    for backend in ("cuda", "torch"):
        out = ops.damsm_loss(img, glob, wrd, sent, lens, classes, 4.0, 5.0, 10.0, backend=backend)
        total = out.w_loss0 + out.w_loss1
        results.append([total.detach(), *torch.autograd.grad(total, (img, wrd))])
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


@gpu
def test_damsm_more_than_32_words_is_refused_clearly():
    img, wrd, lens = _damsm_inputs(2, 8, 9, 33, torch.float32)
    with pytest.raises(ValueError, match=r"at most 32 words.*T = 33"):
        _damsm_word_similarity_op(img, wrd, lens, 4.0, 5.0, "cuda")


@gpu
def test_damsm_opcheck():
    img, wrd, lens = _damsm_inputs(4, 16, 21, 6, torch.float32)
    img.requires_grad_()
    wrd.requires_grad_()
    torch.library.opcheck(
        torch.ops.attngan_fast.damsm_word_similarity.default, (img, wrd, lens, 4.0, 5.0, "cuda")
    )


# --- GPU: batch_norm_act --------------------------------------------------------------------------


def _placed(values, layout, misaligned):
    """values in the given layout; misaligned: a view one element into its storage (the kernels'
    scalar fallback)."""
    cl = layout == "channels_last"
    dense = values.permute(0, 2, 3, 1) if cl else values  # the order of the memory
    flat = torch.empty(dense.numel() + 1, dtype=values.dtype, device=values.device)
    flat = flat[1:] if misaligned else flat[:-1]
    flat.copy_(dense.reshape(-1))
    placed = flat.view(dense.shape)
    return placed.permute(0, 3, 1, 2) if cl else placed


def _bn_inputs(shape, dtype, layout, affine, misaligned=False):
    channels = shape[1]
    x = _placed((torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype), layout, misaligned)
    residual = _placed(torch.randn(shape, device="cuda").to(dtype), layout, misaligned)
    weight = 1 + 0.1 * torch.randn(channels, device="cuda") if affine else None
    bias = 0.1 * torch.randn(channels, device="cuda") if affine else None
    running = (torch.randn(channels, device="cuda"), torch.rand(channels, device="cuda") + 0.5)
    return x, residual, weight, bias, running


def _bn_run(backend, mode, x, residual, weight, bias, running, training, upstream, to=None):
    cast = (lambda t: t if t is None else t.to(to)) if to is not None else (lambda t: t)
    x_, res_ = _leaves(cast(x), cast(residual))
    params = _leaves(*(cast(p) for p in (weight, bias) if p is not None))
    w_, b_ = params if params else (None, None)
    rm, rv = (cast(t).clone() for t in running)
    if mode == "glu":
        y = ops.batch_norm_glu(x_, w_, b_, rm, rv, training, 0.1, 1e-5, backend=backend)
        inputs = (x_, *params)
    else:
        y = ops.batch_norm_add(x_, res_, w_, b_, rm, rv, training, 0.1, 1e-5, backend=backend)
        inputs = (x_, res_, *params)
    grads = _grads_of([y], inputs, [upstream])
    return [y.detach(), *grads, rm, rv]


def _bn_check(shape, mode, training, dtype, layout="contiguous", affine=True, misaligned=False):
    x, residual, weight, bias, running = _bn_inputs(shape, dtype, layout, affine, misaligned)
    out_shape = list(shape)
    if mode == "glu":
        out_shape[1] //= 2
    upstream = torch.randn(out_shape, dtype=torch.float64, device="cuda")
    args = (mode, x, residual, weight, bias, running, training, upstream)
    fast = _bn_run("cuda", *args)
    ref = _bn_run("torch", *args)
    exact = _bn_run("torch", *args, to=torch.float64)
    assert fast[0].is_contiguous(memory_format=_memory_format(x))
    for k, (f, r, e) in enumerate(zip(fast, ref, exact)):
        assert f.dtype == r.dtype and f.shape == r.shape, k
        assert_parity(f"output {k}", f, r, e, slack_eps=64)


def _memory_format(x):
    cl = x.dim() == 4 and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


BN_SHAPES = [(7, 6), (3, 6, 11), (3, 8, 5, 7), (2, 16, 4, 4), (4, 64, 16, 16)]


@gpu
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batch_norm_parity_fp32(shape, mode, training, layout):
    if layout == "channels_last" and len(shape) != 4:
        pytest.skip("channels-last is 4-D only")
    _bn_check(shape, mode, training, torch.float32, layout)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batch_norm_parity_half(dtype, mode, layout):
    _bn_check((4, 64, 16, 16), mode, True, dtype, layout)
    _bn_check((3, 10, 5, 7), mode, False, dtype, layout)


@gpu
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_batch_norm_real_shape_and_no_affine(mode):
    _bn_check((20, 128, 64, 64), mode, True, torch.bfloat16, "channels_last")
    _bn_check((20, 128, 64, 64), mode, True, torch.float32, "contiguous", affine=False)
    _bn_check((20, 8192), mode, True, torch.float32, "contiguous")  # BatchNorm1d of INIT_STAGE_G


@gpu
@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_batch_norm_misaligned_pointers_use_the_scalar_path(mode, layout):
    _bn_check((2, 16, 4, 4), mode, True, torch.float16, layout, misaligned=True)


@gpu
@pytest.mark.parametrize("mode", ["glu", "add"])
def test_batch_norm_stride0_and_other_layout_gradients(mode):
    x = torch.randn(3, 8, 6, 6, device="cuda").contiguous(memory_format=torch.channels_last)
    residual = torch.randn_like(x)
    results = []
    for backend in ("cuda", "torch"):
        x_, r_ = _leaves(x, residual)
        if mode == "glu":
            y = ops.batch_norm_glu(x_, None, None, None, None, True, 0.1, 1e-5, backend=backend)
        else:
            y = ops.batch_norm_add(x_, r_, None, None, None, None, True, 0.1, 1e-5, backend=backend)
        stride0 = torch.ones((), device="cuda").expand_as(y)
        nchw = torch.randn(y.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        results.append([
            *torch.autograd.grad(y, x_, stride0, retain_graph=True),
            *torch.autograd.grad(y, x_, nchw),
        ])  # fmt: skip
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize(("mode", "channels_last"), [("glu", True), ("add", False)])
def test_batch_norm_opcheck(mode, channels_last):
    x = torch.randn(3, 8, 5, 5, device="cuda", requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    residual = torch.randn_like(x).requires_grad_() if mode == "add" else None
    weight = torch.randn(8, device="cuda", requires_grad=True)
    bias = torch.randn(8, device="cuda", requires_grad=True)
    running = (torch.zeros(8, device="cuda"), torch.ones(8, device="cuda"))
    for training in (True, False):
        torch.library.opcheck(
            torch.ops.attngan_fast.batch_norm_act.default,
            (x, residual, weight, bias, *running, training, 1e-5, mode, "cuda"),
        )


# --- GPU: the extension's own checks --------------------------------------------------------------


@gpu
def test_c_word_attention_rejects_bad_inputs_by_name():
    C = _c()
    q = torch.randn(2, 3, 10, device="cuda")
    s = torch.randn(2, 3, 4, device="cuda")
    op = r"word_attention \(cuda forward\)"
    with pytest.raises(TypeError, match=op + ": query must be float32"):
        C.word_attention_forward(q.long(), s, None, True, False)
    with pytest.raises(ValueError, match=op + ": query must be a CUDA tensor"):
        C.word_attention_forward(q.cpu(), s, None, True, False)
    with pytest.raises(ValueError, match=op + ": query must be contiguous"):
        C.word_attention_forward(q.transpose(1, 2).contiguous().transpose(1, 2), s, None, True,
                                 False)  # fmt: skip
    with pytest.raises(TypeError, match=op + ": source is Half"):
        C.word_attention_forward(q, s.half(), None, True, False)
    with pytest.raises(ValueError, match=op + r": source must have shape B x C x T"):
        C.word_attention_forward(q, s[:1].contiguous(), None, True, False)
    with pytest.raises(ValueError, match=op + r": mask must have shape B x T"):
        C.word_attention_forward(q, s, torch.zeros(2, 5, dtype=torch.bool, device="cuda"), True,
                                 False)  # fmt: skip
    with pytest.raises(TypeError, match=r"word_attention \(cuda backward\): lse must be"):
        C.word_attention_backward(q, None, q, s, None, torch.zeros(2, 10, device="cuda").half(),
                                  False)  # fmt: skip


@gpu
def test_c_damsm_and_batch_norm_reject_bad_inputs_by_name():
    C = _c()
    img = torch.randn(2, 8, 9, device="cuda")
    wrd = torch.randn(2, 8, 5, device="cuda")
    lens = torch.tensor([5, 2], device="cuda")
    op = r"damsm_word_similarity \(cuda forward\)"
    with pytest.raises(TypeError, match=op + ": cap_lens must be int64"):
        C.damsm_word_similarity_forward(img, wrd, lens.int(), 4.0, 5.0)
    with pytest.raises(ValueError, match=op + ": words must be a CUDA tensor"):
        C.damsm_word_similarity_forward(img, wrd.cpu(), lens, 4.0, 5.0)
    with pytest.raises(ValueError, match=op + ": img_local must be contiguous"):
        C.damsm_word_similarity_forward(img.transpose(1, 2).contiguous().transpose(1, 2), wrd,
                                        lens, 4.0, 5.0)  # fmt: skip
    x = torch.randn(2, 6, 3, 3, device="cuda")
    op = r"batch_norm_act \(cuda forward\)"
    with pytest.raises(ValueError, match=op + ": x must be contiguous or channels-last"):
        C.batch_norm_act_forward(x[:, :, :, :2], None, None, None, None, None, True, 1e-5, "glu")
    with pytest.raises(ValueError, match=op + ": mode must be 'glu' or 'add'"):
        C.batch_norm_act_forward(x, None, None, None, None, None, True, 1e-5, "relu")
    with pytest.raises(TypeError, match=op + ": x must be float32"):
        C.batch_norm_act_forward(x.long(), None, None, None, None, None, True, 1e-5, "glu")
    residual = torch.randn_like(x).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=op + ": residual must have the memory format of x"):
        C.batch_norm_act_forward(x, residual, None, None, None, None, True, 1e-5, "add")
