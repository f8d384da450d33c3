"""word_attention: reference maths, the original's indexing, masks, gradients and registration."""

import pytest
import torch

from attngan_fast import ops
from attngan_fast.ops import original
from attngan_fast.ops.word_attention import row_mask


def _inputs(batch=3, channels=5, regions=7, words=4, dtype=torch.float64):
    query = torch.randn(batch, channels, regions, dtype=dtype, requires_grad=True)
    source = torch.randn(batch, channels, words, dtype=dtype, requires_grad=True)
    return query, source


def _mask(batch, words, lengths):
    return torch.arange(words)[None, :] >= torch.tensor(lengths)[:, None]


def test_per_sample_mask_matches_a_loop_over_samples():
    query, source = _inputs(batch=4, regions=11, words=6)
    mask = _mask(4, 6, [6, 1, 3, 5])
    context, attn = ops.word_attention(query, source, mask)
    for b in range(4):
        valid = ~mask[b]
        scores = query[b].T @ source[b][:, valid]
        p = torch.softmax(scores, dim=-1)
        torch.testing.assert_close(context[b], source[b][:, valid] @ p.T)
        torch.testing.assert_close(attn[b][valid], p.T)
        assert torch.all(attn[b][~valid] == 0)


def test_legacy_mask_reproduces_the_original_indexing():
    query, source = _inputs(batch=3, regions=7, words=5)
    mask = _mask(3, 5, [5, 2, 1])
    context, attn = ops.word_attention(query, source, mask, legacy_mask=True)
    ctx_orig, attn_orig = original.global_attention_general(query, source, mask)
    torch.testing.assert_close(context, ctx_orig)
    torch.testing.assert_close(attn, attn_orig)
    # and the legacy mask really differs from the per-sample one here
    assert not torch.allclose(ops.word_attention(query, source, mask)[0], ctx_orig)


def test_legacy_row_mask_index():
    mask = _mask(3, 4, [4, 1, 2])
    rows = row_mask(mask, 5, legacy_mask=True)
    for b in range(3):
        for n in range(5):
            assert torch.equal(rows[b, n], mask[(b * 5 + n) % 3])


def test_without_mask_equals_original():
    query, source = _inputs()
    context, attn = ops.word_attention(query, source, None)
    ctx_orig, attn_orig = original.global_attention_general(query, source, None)
    torch.testing.assert_close(context, ctx_orig)
    torch.testing.assert_close(attn, attn_orig)


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    query, source = _inputs(batch=3, words=4)
    mask = _mask(3, 4, [4, 0, 2])
    context, attn = ops.word_attention(query, source, mask)
    assert torch.all(context[1] == 0) and torch.all(attn[1] == 0)
    (context.sum() + attn.sum()).backward()
    assert torch.isfinite(query.grad).all() and torch.isfinite(source.grad).all()
    assert torch.all(query.grad[1] == 0)
    ref_ctx, ref_attn = ops.word_attention_reference(query, source, mask)
    torch.testing.assert_close(context, ref_ctx)
    torch.testing.assert_close(attn, ref_attn)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("need_attn", [False, True])
def test_gradcheck_float64(legacy, need_attn):
    query, source = _inputs(batch=3, channels=3, regions=6, words=5)
    mask = _mask(3, 5, [5, 1, 3])

    def fn(q, s):
        context, attn = ops.word_attention(q, s, mask, need_attn=need_attn, legacy_mask=legacy)
        return (context, attn) if need_attn else context

    assert torch.autograd.gradcheck(fn, (query, source))


def test_backward_matches_autograd_of_reference_with_stride0_grad():
    query, source = _inputs(batch=2, channels=4, regions=9, words=3)
    mask = _mask(2, 3, [1, 3])
    context, _ = ops.word_attention(query, source, mask, need_attn=False)
    grad = torch.ones((), dtype=query.dtype).expand_as(context)  # stride-0 upstream gradient
    got = torch.autograd.grad(context, (query, source), grad)
    ref = torch.autograd.grad(
        ops.word_attention_reference(query, source, mask)[0], (query, source), grad
    )
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)


def test_non_contiguous_inputs():
    query = torch.randn(3, 7, 5, dtype=torch.float64).transpose(1, 2)  # B x C x N, strided
    source = torch.randn(3, 4, 5, dtype=torch.float64).transpose(1, 2)
    context, attn = ops.word_attention(query, source, None)
    ref_ctx, ref_attn = ops.word_attention_reference(query.contiguous(), source.contiguous(), None)
    torch.testing.assert_close(context, ref_ctx)
    torch.testing.assert_close(attn, ref_attn)


def test_opcheck():
    query, source = _inputs(dtype=torch.float32)
    mask = _mask(3, 4, [4, 1, 0])
    for legacy in (False, True):
        torch.library.opcheck(
            torch.ops.attngan_fast.word_attention.default,
            (query, source, mask, True, legacy, "torch"),
        )
    torch.library.opcheck(
        torch.ops.attngan_fast.word_attention.default, (query, source, None, False, False, "torch")
    )


def test_autocast_runs_in_lower_precision():
    query, source = _inputs(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        context, attn = ops.word_attention(query, source, None)
    assert context.dtype == torch.bfloat16 and attn.dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("make", "error", "text"),
    [
        (lambda q, s, m: (q[0], s, m), ValueError, "query must have shape B x C x N"),
        (lambda q, s, m: (q, s[:, :2], m), ValueError, "source"),
        (lambda q, s, m: (q, s[:2], m), ValueError, "source"),
        (lambda q, s, m: (q, s, m.long()), TypeError, "mask must be a bool tensor"),
        (lambda q, s, m: (q, s, m[:, :2]), ValueError, "mask must have shape B x T"),
        (lambda q, s, m: (q.long(), s, m), TypeError, "query must be float32"),
        (lambda q, s, m: (q, s.double(), m), TypeError, "source is torch.float64"),
        (lambda q, s, m: (q, s.to("meta"), m), ValueError, "source is on meta"),
        (lambda q, s, m: (q[:, :, :0], s, m), ValueError, "query must not be empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(make, error, text):
    query, source = _inputs(dtype=torch.float32)
    mask = _mask(3, 4, [4, 1, 2])
    with pytest.raises(error, match=text):
        ops.word_attention(*make(query.detach(), source.detach(), mask))
