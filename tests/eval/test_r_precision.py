"""R-precision (DM-GAN protocol) on code sets whose answer is known."""

import numpy as np
import pytest
import torch

from attngan_fast.eval.r_precision import (
    encode_captions,
    evaluate_r_precision,
    pad_captions,
    r_precision,
    sample_mismatched,
)
from attngan_fast.models.text_encoder import RNN_ENCODER


def test_image_codes_equal_to_sentence_codes_give_100_percent():
    sent = torch.randn(300, 32)
    result = r_precision(sent * 3.0, sent, class_ids=torch.arange(300) % 30)
    assert result.mean == 100.0 and result.std == 0.0 and len(result.folds) == 10


def test_random_codes_give_about_one_percent():
    gen = torch.Generator().manual_seed(1)
    img, sent = torch.randn(3000, 16, generator=gen), torch.randn(3000, 16, generator=gen)
    result = r_precision(img, sent, class_ids=np.arange(3000) % 50)
    # 3000 Bernoulli(1/100) draws: mean 1 %, std of the mean 0.18 %
    assert 0.4 < result.mean < 1.8
    assert result.std > 0


def test_fold_statistics_are_those_of_the_hits():
    sent = torch.randn(40, 8)
    img = torch.cat([sent[:20], -sent[20:]])  # first half right, second half wrong
    result = r_precision(img, sent, n_candidates=10, n_folds=2)
    assert result.folds == [100.0, 0.0]
    assert result.mean == 50.0 and result.std == 50.0
    assert result.hits.tolist() == [True] * 20 + [False] * 20


def test_ties_count_as_misses():
    codes = torch.ones(50, 4)
    assert r_precision(codes, codes, n_candidates=5, n_folds=5).mean == 0.0


def test_captions_of_the_same_class_are_never_candidates():
    # pairs of images share a class and an identical caption code: drawing a same-class caption
    # would tie with the true one (a miss); with every other-class caption drawn, all must hit
    sent = torch.randn(10, 8).repeat_interleave(2, dim=0)
    classes = torch.arange(20) // 2
    result = r_precision(sent, sent, class_ids=classes, n_candidates=19, n_folds=4)
    assert result.mean == 100.0
    idx = sample_mismatched(classes.numpy(), classes.numpy(), 18, np.random.default_rng(0))
    for i, row in enumerate(idx):
        assert len(set(row)) == 18 and all(classes[j] != classes[i] for j in row)


def test_separate_caption_pool():
    sent = torch.randn(30, 8)
    pool = torch.cat([sent, torch.randn(70, 8)])
    pool_classes = np.concatenate([np.arange(30), 100 + np.arange(70)])
    result = r_precision(sent, sent, np.arange(30), pool, pool_classes, n_folds=3)
    assert result.mean == 100.0
    hard_pool = sent.repeat(4, 1)  # the image codes' own captions under other class ids: ties
    result = r_precision(sent, sent, np.arange(30), hard_pool, 1000 + np.arange(120), n_folds=3)
    assert result.mean < 100.0


def test_deterministic_with_a_seed_and_small_pools_are_rejected():
    img, sent = torch.randn(200, 8), torch.randn(200, 8)
    a = r_precision(img, sent, n_candidates=50, seed=3)
    b = r_precision(img, sent, n_candidates=50, seed=3)
    assert a.folds == b.folds
    with pytest.raises(ValueError, match="fewer than the 99"):
        r_precision(sent[:50], sent[:50])
    with pytest.raises(ValueError, match="n_folds"):
        r_precision(sent[:5], sent[:5], n_candidates=3, n_folds=6)


def test_encode_captions_matches_a_direct_batch():
    enc = RNN_ENCODER(ntoken=20, ninput=12, nhidden=16).eval()
    captions = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]
    ids, lens = pad_captions(captions)
    assert ids.tolist()[1] == [4, 5, 0, 0, 0] and lens.tolist() == [3, 2, 5, 1]
    direct = enc(ids, lens)[1]
    torch.testing.assert_close(encode_captions(enc, captions, batch_size=3), direct)
    with pytest.raises(ValueError, match="empty"):
        pad_captions([[1], []])


class _CodeAsImage(torch.nn.Module):
    """An 'image encoder' whose global code is the image itself, flattened."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x, x.flatten(1)


def test_evaluate_r_precision_end_to_end_known_cases():
    gen = torch.Generator().manual_seed(0)
    n_items, cpi = 60, 3
    captions = [
        torch.randint(1, 40, (int(torch.randint(3, 8, (1,), generator=gen)),), generator=gen)
        for _ in range(n_items * cpi)
    ]
    captions = [c.tolist() for c in captions]
    classes = [i // 2 for i in range(n_items)]
    text = RNN_ENCODER(ntoken=40, ninput=8, nhidden=16).eval()

    def faithful(ids, lens):  # "images" whose code is the caption's sentence embedding
        return text(ids, lens)[1][:, :, None, None]

    def unrelated(ids, lens):
        return torch.randn(len(ids), 16, 1, 1, generator=gen)

    kwargs = dict(captions_per_image=cpi, n_images=120, n_candidates=20, n_folds=4, batch_size=32)
    good = evaluate_r_precision(faithful, _CodeAsImage(), text, captions, classes, **kwargs)
    assert good.mean == 100.0 and len(good.hits) == 120
    bad = evaluate_r_precision(unrelated, _CodeAsImage(), text, captions, classes, **kwargs)
    assert bad.mean < 25.0  # chance is 5 %
