"""DAMSM pretraining scores text-image retrieval on the test split after every epoch and keeps the
best epoch's encoders (``text_encoder_best.pth``, ``best_encoders.json``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from train_helpers import tiny_damsm_cfg

from attngan_fast.runtime.retrieval import recall_at_1
from attngan_fast.train.damsm_eval import RetrievalScores, retrieval_scores
from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm


def test_recall_at_1_on_known_codes():
    codes = torch.randn(50, 8)
    assert recall_at_1(codes * 2, codes) == (100.0, 100.0)
    assert recall_at_1(codes.roll(1, 0), codes) == (0.0, 0.0)
    half = torch.cat([codes[:25], codes[25:].roll(1, 0)])  # second half matched to its neighbour
    assert recall_at_1(half, codes) == (50.0, 50.0)
    one_way = codes.clone()
    one_way[1] = codes[0] * 3  # image 1 looks like caption 0: it steals caption 0's first place
    t2i, i2t = recall_at_1(one_way, codes)
    assert t2i == pytest.approx(98.0) and i2t == pytest.approx(98.0)
    with pytest.raises(ValueError, match="N x D"):
        recall_at_1(codes, codes[:3])


class _Dataset:
    """A test split stand-in: item i's image carries i, caption 0 of item i is word i + 1."""

    captions_per_image = 2

    def __init__(self, n, classes):
        self.n, self.class_ids = n, classes
        self.captions = [[i + 1] if k == 0 else [99] for i in range(n) for k in range(2)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return type("Sample", (), {"images": [torch.full((3, 4, 4), float(i))]})()


class _Coder(nn.Module):
    """Maps an id (image value, or a caption's only word - 1) to a one-hot code."""

    def __init__(self, n, text):
        super().__init__()
        self.n, self.text = n, text
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x, lens=None):
        ids = (x[:, 0] - 1) if self.text else x[:, 0, 0, 0].long()
        return None, torch.eye(self.n)[ids]  # (local features: unused, global code)


def test_retrieval_scores_of_perfect_encoders_and_their_modes():
    data = _Dataset(12, np.arange(12) % 3)
    text, image = _Coder(12, True).train(), _Coder(12, False).eval()
    scores = retrieval_scores(text, image, data, batch_size=5, n_candidates=100)
    assert (scores.r1_text_to_image, scores.r1_image_to_text, scores.r_precision) == (100, 100, 100)
    assert scores.candidates == 9  # 8 captions of other classes + the true one
    assert text.training and not image.training  # modes restored
    same_class = retrieval_scores(_Coder(12, True), _Coder(12, False), _Dataset(4, np.zeros(4)))
    assert same_class.r_precision is None and same_class.criterion == 100.0


def test_pretraining_keeps_the_best_epoch(tmp_path, synth_root):
    out = tmp_path / "damsm"
    pretrain_damsm(
        tiny_damsm_cfg(),
        PretrainOptions(out_dir=out, data_dir=synth_root, image_encoder="small", small_ndf=4,
                        small_size=32, max_epochs=3, progress=False, log_every=1),
    )  # fmt: skip
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if "test_r1_text_to_image" in r]
    assert [r["epoch"] for r in tests] == [0, 1, 2]
    best = json.loads((out / "best_encoders.json").read_text())
    criteria = [r.get("test_r_precision", r["test_r1_text_to_image"]) for r in tests]
    assert best["epoch"] == int(np.argmax(criteria))  # the first epoch with the highest score
    assert RetrievalScores(**{k: best[k] for k in best if k not in ("epoch", "step")})
    snapshot = torch.load(out / f"text_encoder{best['epoch']}.pth")  # snapshots every epoch
    kept = torch.load(out / "text_encoder_best.pth")
    assert all(torch.equal(snapshot[k], kept[k]) for k in snapshot)


def test_pretraining_without_test_eval_keeps_no_best(tmp_path, synth_root):
    out = tmp_path / "damsm"
    pretrain_damsm(
        tiny_damsm_cfg(),
        PretrainOptions(out_dir=out, data_dir=synth_root, image_encoder="small", small_ndf=4,
                        small_size=32, max_steps=2, progress=False, test_eval=False),
    )  # fmt: skip
    assert (
        not (out / "best_encoders.json").exists() and not (out / "text_encoder_best.pth").exists()
    )
