"""damsm_loss: the vectorised reference against the original per-caption loop."""

import pytest
import torch

from attngan_fast import ops
from attngan_fast.ops import damsm, original

GAMMAS = (4.0, 5.0, 10.0)


def _inputs(batch=5, dim=7, height=3, width=4, words=6, dtype=torch.float64):
    def leaf(*shape):
        return torch.randn(*shape, dtype=dtype, requires_grad=True)

    lens = torch.randint(1, words + 1, (batch,))
    lens[0], lens[1] = words, 1  # a full caption and a one-word caption
    return (
        leaf(batch, dim, height, width),
        leaf(batch, dim),
        leaf(batch, dim, words),
        leaf(batch, dim),
        lens,
    )


def _original(img_local, img_global, words, sent, lens, class_ids):
    batch = img_local.shape[0]
    labels = torch.arange(batch)
    w0, w1, maps, raw = original.words_loss(
        img_local, words, labels, lens, class_ids, batch, *GAMMAS
    )
    s0, s1 = original.sent_loss(img_global, sent, labels, class_ids, batch, GAMMAS[2])
    return (w0, w1, s0, s1), maps, raw


@pytest.mark.parametrize("with_classes", [False, True])
def test_vectorised_equals_original_loop_values_and_gradients(with_classes):
    img_local, img_global, words, sent, lens = inputs = _inputs()
    class_ids = torch.tensor([1, 2, 1, 3, 1]) if with_classes else None
    out = ops.damsm_loss(*inputs, class_ids, *GAMMAS, need_similarity=True, need_attn=True)
    expected, maps, raw = _original(*inputs, class_ids)
    for got, want in zip(out[:4], expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.similarity, raw)
    for i, att in enumerate(maps):
        torch.testing.assert_close(out.attn_maps[i, : int(lens[i])], att[0])
        assert torch.all(out.attn_maps[i, int(lens[i]) :] == 0)
    leaves = (img_local, img_global, words, sent)
    got = torch.autograd.grad(sum(out[:4]), leaves)
    want = torch.autograd.grad(sum(expected), leaves)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_chunk_size_does_not_change_the_result(monkeypatch):
    img_local, img_global, words, sent, lens = inputs = _inputs(batch=6)
    full = ops.damsm_loss(*inputs, None, *GAMMAS, need_similarity=True)
    grads_full = torch.autograd.grad(sum(full[:4]), (img_local, words))
    monkeypatch.setattr(damsm, "CHUNK_ELEMENTS", 1)  # one caption per chunk
    assert damsm._captions_per_chunk(6, 12, 6) == 1
    chunked = ops.damsm_loss(*inputs, None, *GAMMAS, need_similarity=True)
    torch.testing.assert_close(chunked.similarity, full.similarity)
    for g, w in zip(torch.autograd.grad(sum(chunked[:4]), (img_local, words)), grads_full):
        torch.testing.assert_close(g, w)


def test_chunk_memory_is_bounded():
    # B = 100 captions and images, R = 289, T = 25: a chunk stays within the element budget.
    per_chunk = damsm._captions_per_chunk(100, 289, 25)
    assert per_chunk * 100 * 289 * 25 <= damsm.CHUNK_ELEMENTS
    assert per_chunk < 100


def test_many_same_class_pairs():
    inputs = _inputs(batch=6)
    class_ids = torch.tensor([4, 4, 4, 4, 9, 9])
    out = ops.damsm_loss(*inputs, class_ids, *GAMMAS)
    expected, _, _ = _original(*inputs, class_ids)
    for got, want in zip(out[:4], expected):
        torch.testing.assert_close(got, want)
        assert torch.isfinite(got)


def test_gradcheck_similarity_float64():
    img_local, _, words, _, lens = _inputs(batch=3, dim=4, height=2, width=3, words=4)
    assert torch.autograd.gradcheck(
        lambda v, e: damsm.damsm_word_similarity_reference(v, e, lens, 4.0, 5.0), (img_local, words)
    )
    assert torch.autograd.gradcheck(
        lambda v, e: torch.ops.attngan_fast.damsm_word_similarity(
            v.flatten(2), e, lens, 4.0, 5.0, "torch"
        ),
        (img_local, words),
    )


def test_gradcheck_whole_loss_float64():
    img_local, img_global, words, sent, lens = _inputs(batch=3, dim=4, height=2, width=2, words=3)
    class_ids = torch.tensor([0, 0, 1])

    def fn(*leaves):
        return torch.stack(list(ops.damsm_loss(*leaves, lens, class_ids, *GAMMAS)[:4]))

    assert torch.autograd.gradcheck(fn, (img_local, img_global, words, sent))


def test_opcheck():
    img_local, _, words, _, lens = _inputs(dtype=torch.float32)
    torch.library.opcheck(
        torch.ops.attngan_fast.damsm_word_similarity.default,
        (img_local.detach().flatten(2).requires_grad_(), words, lens, 4.0, 5.0, "torch"),
    )


def test_mixed_dtypes_are_promoted():
    img_local, img_global, words, sent, lens = _inputs(dtype=torch.float32)
    out = ops.damsm_loss(img_local.bfloat16(), img_global, words, sent, lens, None, *GAMMAS)
    assert out.w_loss0.dtype == torch.float32 and torch.isfinite(out.w_loss0)


@pytest.mark.parametrize(
    ("change", "error", "text"),
    [
        (
            dict(cap_lens=torch.tensor([6, 1, 0, 2, 3])),
            ValueError,
            r"cap_lens must lie in \[1, T = 6\]",
        ),
        (dict(cap_lens=torch.tensor([7, 1, 1, 2, 3])), ValueError, "cap_lens must lie in"),
        (dict(cap_lens=torch.ones(5)), TypeError, "cap_lens must be an int64"),
        (dict(cap_lens=torch.ones(4, dtype=torch.long)), ValueError, "cap_lens must have shape B"),
        (
            dict(class_ids=torch.ones(3, dtype=torch.long)),
            ValueError,
            "class_ids must have shape B",
        ),
        (dict(words=torch.randn(5, 8, 6)), ValueError, "words must have shape B x D x T"),
        (dict(sent=torch.randn(4, 7)), ValueError, "sent must have shape B x D"),
        (dict(img_global=torch.randn(4, 7), sent=torch.randn(4, 7)), ValueError, "img_global must"),
        (
            dict(img_local=torch.randn(5, 7, 9)),
            ValueError,
            "img_local must have shape B x D x H x W",
        ),
        (
            dict(img_global=torch.ones(5, 7, dtype=torch.long)),
            TypeError,
            "img_global must be float32",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(change, error, text):
    img_local, img_global, words, sent, lens = _inputs(dtype=torch.float32)
    args = dict(
        img_local=img_local,
        img_global=img_global,
        words=words,
        sent=sent,
        cap_lens=lens,
        class_ids=None,
    )
    args.update(change)
    with pytest.raises(error, match=text):
        ops.damsm_loss(**args, gamma1=4.0, gamma2=5.0, gamma3=10.0)
