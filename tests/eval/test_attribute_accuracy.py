"""SynthBirds attribute accuracy: classifier on a tiny real set, caption targets, scoring."""

import pytest
import torch

from attngan_fast.data.synth_birds import PALETTE, PARTS, make_synth_birds
from attngan_fast.data.text_image import load_text_image_dataset
from attngan_fast.eval.attribute_accuracy import (
    attribute_accuracy,
    evaluate_synth_birds,
    load_caption_targets,
    load_classifier,
    load_real_images,
    save_classifier,
    score_images,
    train_classifier,
)

CHANCE = 1 / len(PALETTE)
PART_WORDS = {
    "crown": {"crown"}, "body": {"body", "bird"}, "belly": {"belly", "breast"},
    "wing": {"wings", "wing"}, "tail": {"tail"}, "beak": {"beak", "bill"},
}  # fmt: skip


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny SynthBirds set and a classifier trained briefly on its train split."""
    root = make_synth_birds(
        tmp_path_factory.mktemp("synth") / "birds", n_train=640, n_test=80, seed=1, image_size=64
    )
    real = load_real_images(root, "train")
    held_out = load_real_images(root, "test")
    clf, report = train_classifier(real, held_out, steps=120)
    return root, clf, report, held_out


def test_real_images_come_with_their_part_colours(synth):
    root, _, _, held_out = synth
    assert held_out.images.shape == (80, 3, 64, 64)
    assert held_out.labels.shape == (80, len(PARTS))
    assert held_out.images.min() >= -1 and held_out.images.max() <= 1
    assert held_out.labels.min() >= 0 and held_out.labels.max() < len(PALETTE)


def test_classifier_learns_above_chance_on_held_out_species(synth):
    _, _, report, _ = synth
    assert report.held_out_accuracy > 2 * CHANCE
    best = max(report.held_out_per_part.values())
    assert best > 0.5, report.held_out_per_part


def test_caption_targets_are_the_colours_the_captions_name(synth):
    root = synth[0]
    targets = load_caption_targets(root, "test", per_image=3)
    dataset = load_text_image_dataset(root, "test", "cub", base_size=64, branch_num=1)
    assert len(targets.captions) == 3 * len(dataset) == len(targets.targets)
    named = 0
    for ids, row in zip(targets.captions, targets.targets.tolist()):
        words = dataset.vocab.decode(ids).split()
        for part, colour in zip(PARTS, row):
            if colour >= 0:
                named += 1
                assert PALETTE[colour] in words
                assert PART_WORDS[part] & set(words)
    assert named > len(targets.captions)  # captions name one to four parts


def test_score_counts_only_named_parts():
    class Fixed:  # a classifier stub that always predicts the same colours
        parts = PARTS

        def predict(self, images, batch_size=256):
            return torch.tensor([[0, 1, 2, 3, 4, 5]]).repeat(len(images), 1)

    targets = torch.full((4, 6), -1)
    targets[0, 0] = 0  # hit (crown)
    targets[1, 0] = 1  # miss (crown)
    targets[2, 5] = 5  # hit (beak)
    targets[3, 1] = 1  # hit (body)
    result = score_images(Fixed(), torch.zeros(4, 3, 8, 8), targets)
    assert result.accuracy == 0.75 and result.named == 4
    assert result.per_part == {"crown": 0.5, "body": 1.0, "beak": 1.0}
    with pytest.raises(ValueError, match="names"):
        score_images(Fixed(), torch.zeros(1, 3, 8, 8), torch.full((1, 6), -1))


def test_real_images_score_high_and_noise_low(synth):
    root, clf, report, held_out = synth
    targets = load_caption_targets(root, "test", per_image=2)
    larger = load_real_images(root, "test", image_size=128)  # as G's last stage: resized
    by_key = {key: i for i, key in enumerate(larger.keys)}
    full = larger.images
    sources = iter([by_key[k] for k in targets.keys])

    def real_generator(captions, cap_lens):
        return full[[next(sources) for _ in range(len(captions))]]

    gen = torch.Generator().manual_seed(0)

    def noise_generator(captions, cap_lens):
        return torch.rand(len(captions), 3, 128, 128, generator=gen) * 2 - 1

    real = attribute_accuracy(clf, real_generator, targets, batch_size=32)
    noise = attribute_accuracy(clf, noise_generator, targets, batch_size=32)
    assert real.accuracy > noise.accuracy + 0.15
    assert noise.accuracy < 2.5 * CHANCE


def test_classifier_round_trip_and_pipeline(synth, tmp_path):
    root, clf, report, held_out = synth
    path = save_classifier(clf, report, tmp_path / "clf.pth")
    loaded, loaded_report = load_classifier(path)
    assert torch.equal(loaded.predict(held_out.images), clf.predict(held_out.images))
    assert loaded_report == report
    with pytest.warns(RuntimeWarning, match="unreliable"):  # briefly trained: below 90 %
        result = evaluate_synth_birds(
            root, lambda c, n: torch.zeros(len(c), 3, 64, 64), classifier_path=path
        )  # the saved classifier is used: no training here
    assert result.classifier == report
    # every image is the same (zeros): one prediction, scored against the first caption's colours
    pred = clf.predict(torch.zeros(1, 3, 64, 64))[0]
    targets = load_caption_targets(root, "test", per_image=1).targets
    named = targets >= 0
    assert result.score.named == int(named.sum())
    hits = int(((targets == pred) & named).sum())
    assert result.score.accuracy == pytest.approx(hits / int(named.sum()), rel=1e-12)
