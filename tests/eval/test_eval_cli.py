"""``attngan-fast eval`` on a tiny run folder laid out as the trainer writes it.

Each command's numbers are checked against the same metric computed here by hand (numpy) from the
run's own generator, encoders and data: the images of the chosen captions (generated batch by
batch, batch k with seed ``--seed + k``), their codes, and the paper's formula.
"""

import importlib
import json

import numpy as np
import pytest
import torch

from attngan_fast.config import load_config
from attngan_fast.eval.attribute_accuracy import (
    PartColourClassifier,
    load_caption_targets,
    load_classifier,
)
from attngan_fast.eval.cli import main
from attngan_fast.eval.r_precision import (
    caption_choice,
    encode_captions,
    encode_images,
    pad_captions,
    sample_mismatched,
)
from attngan_fast.models.inception import Inception3
from attngan_fast.runtime.generation import load_generation_models, run_generator
from attngan_fast.runtime.loaders import load_dataset
from attngan_fast.runtime.networks import EncoderSpec, load_image_encoder
from attngan_fast.runtime.run_dir import load_vocabulary, resolve_generation_files


def _models(folder, device="cpu"):
    files = resolve_generation_files(folder)
    vocab = load_vocabulary(files.vocab)
    return load_generation_models(files.netG, files.text_encoder, vocab, device)


def _test_split(folder):
    info = json.loads((folder / "run.json").read_text())
    return load_dataset(info["data_dir"], load_config(folder / "config.yml"), "test", "auto", False)


def _generated(models, captions, seed, batch_size):
    """Last-stage images of ``captions``, batch k drawn with seed ``seed + k``."""
    out = []
    for k, start in enumerate(range(0, len(captions), batch_size)):
        ids, lens = pad_captions(captions[start : start + batch_size])
        out.append(run_generator(models, ids, lens, seed + k, need_attn=False)[0][-1])
    return torch.cat(out)


def test_r_precision_command(run, capsys, monkeypatch):
    folder, tmp = run
    out = tmp / "rp.json"
    encoded = []

    def encode(encoder, batches):
        batches = list(batches)
        encoded.extend(batches)
        return encode_images(encoder, batches)

    module = importlib.import_module("attngan_fast.eval.r_precision")  # not the function
    monkeypatch.setattr(module, "encode_images", encode)
    args = ["r-precision", "--checkpoint", str(folder), "--n-images", "24", "--candidates", "5"]
    assert main([*args, "--folds", "3", "--batch-size", "10", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out)["folds"] == record["folds"]

    # by hand: DM-GAN's protocol with 4 mismatched captions of other classes per image
    models, data = _models(folder), _test_split(folder)
    info = json.loads((folder / "run.json").read_text())
    encoder = load_image_encoder(info["image_encoder"], EncoderSpec(**info["encoder_spec"]))
    chosen = caption_choice(24, len(data), data.captions_per_image, seed=0)
    images = _generated(models, [data.captions[i] for i in chosen], seed=0, batch_size=10)
    assert torch.equal(torch.cat(encoded), images)  # the command scored these images
    img = encode_images(encoder, [images]).double().numpy()
    text = encode_captions(models.text_encoder, data.captions).double().numpy()
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    classes = np.repeat(np.asarray(data.class_ids), data.captions_per_image)
    wrong = sample_mismatched(classes[chosen], classes, 4, np.random.default_rng(0))
    true_score = (img * text[chosen]).sum(1)
    wrong_score = np.einsum("nd,nkd->nk", img, text[wrong])
    hits = true_score > wrong_score.max(1)
    folds = [100.0 * f.mean() for f in np.array_split(hits, 3)]
    assert record["folds"] == pytest.approx(folds, abs=1e-9)
    assert record["r_precision_mean"] == pytest.approx(np.mean(folds), abs=1e-9)
    assert record["r_precision_std"] == pytest.approx(np.std(folds), abs=1e-9)
    assert record["n_images"] == 24 and record["candidates"] == 5


def test_attributes_command(run, monkeypatch):
    folder, tmp = run
    out = tmp / "attr.json"
    scored = []
    real_predict = PartColourClassifier.predict

    def predict(clf, images, batch_size=256):
        scored.append(images)
        return real_predict(clf, images, batch_size)

    args = ["attributes", "--checkpoint", str(folder), "--classifier-steps", "2"]
    args += ["--batch-size", "7"]
    with pytest.warns(RuntimeWarning, match="unreliable"):  # two steps: an untrained classifier
        assert main([*args, "--classifier", str(tmp / "clf.pth"), "--json", str(out)]) == 0
    record = json.loads(out.read_text())

    # by hand: the saved classifier on one image per test item, generated from its first caption
    # in batches of 7 (the command's --batch-size), batch k with seed k
    clf, report = load_classifier(tmp / "clf.pth")
    data_dir = json.loads((folder / "run.json").read_text())["data_dir"]
    targets = load_caption_targets(data_dir, "test", per_image=1)
    images = _generated(_models(folder), targets.captions, seed=0, batch_size=7)
    monkeypatch.setattr(PartColourClassifier, "predict", predict)
    scored.clear()
    main([*args, "--classifier", str(tmp / "clf.pth")])  # scored again, with the saved one
    assert len(scored) == 1 and torch.equal(scored[0], images)
    named = targets.targets >= 0
    hits = (clf.predict(images) == targets.targets) & named
    assert record["named_colours"] == int(named.sum()) > 0
    assert record["attribute_accuracy"] == pytest.approx(float(hits.sum() / named.sum()))
    assert record["classifier_held_out_accuracy"] == report.held_out_accuracy


def test_inception_command_needs_a_weights_file(run, capsys):
    folder, _ = run
    assert main(["inception", "--checkpoint", str(folder)]) == 2
    assert "local file" in capsys.readouterr().err


def _is_and_fid(fake_pool, fake_logits, real_pool, splits):
    """IS (Salimans et al.) and FID (Heusel et al.), float64, by hand.

    FID of few points (N <= D): with S1 = A A^T and S2 = B B^T (A, B the D x N centred features
    over sqrt(N - 1)), the non-zero eigenvalues of S1 S2 are those of the N x N matrix
    A^T B B^T A, so tr((S1 S2)^(1/2)) is the sum of their square roots: no D x D decomposition.
    """
    logits = fake_logits.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for part in np.array_split(p, splits):
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    f1, f2 = fake_pool.double().numpy(), real_pool.double().numpy()
    a = (f1 - f1.mean(0)).T / np.sqrt(len(f1) - 1)
    b = (f2 - f2.mean(0)).T / np.sqrt(len(f2) - 1)
    m = a.T @ b
    eig = np.linalg.eigvalsh(m @ m.T)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = f1.mean(0) - f2.mean(0)
    fid = diff @ diff + (a * a).sum() + (b * b).sum() - 2 * trace_sqrt
    return np.mean(scores), np.std(scores), fid


def _tiny_inception_weights(path):
    """A random Inception-v3 state dict (10 classes) with He-scaled weights, so features and
    logits are of order one (torchvision's init with identity BatchNorm makes them explode:
    every image gets the same one-hot prediction, IS exactly 1). Built on the meta device and
    filled in: no slow initialisation."""
    with torch.device("meta"):
        net = Inception3(num_classes=10)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = torch.ones(value.shape)
        elif value.dim() == 1:
            state[key] = torch.zeros(value.shape)
        else:
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=gen) * (2 / fan_in) ** 0.5
    torch.save(state, path)


class _Spy:
    """Records the inputs and outputs of every ``Inception3.features`` call."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = Inception3.features

        def features(model, x):
            out = real(model, x)
            self.calls.append((x.detach().cpu(), out.pool3.cpu(), out.logits.cpu()))
            return out

        monkeypatch.setattr(Inception3, "features", features)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_inception_command(run, device, monkeypatch):
    """A tiny local weights file, 4 generated and 4 real images in batches of 2: Inception sees
    exactly those images (resized to 299 px) and IS / FID are those of its outputs."""
    folder, tmp = run
    weights = tmp / "inception.pth"
    if not weights.exists():
        _tiny_inception_weights(weights)
    spy = _Spy(monkeypatch)
    out = tmp / f"is_{device}.json"
    args = ["inception", "--checkpoint", str(folder), "--inception-weights", str(weights)]
    args += ["--n-images", "4", "--batch-size", "2", "--splits", "2", "--device", device]
    assert main([*args, "--json", str(out)]) == 0
    record = json.loads(out.read_text())

    models, data = _models(folder, device), _test_split(folder)
    chosen = caption_choice(4, len(data), data.captions_per_image, seed=0)
    fakes = _generated(models, [data.captions[i] for i in chosen], seed=0, batch_size=2)
    reals = torch.stack([data[i].images[-1] for i in range(4)])
    seen = torch.cat([x for x, _, _ in spy.calls])
    resized = torch.nn.functional.interpolate(
        torch.cat([fakes, reals]), size=(299, 299), mode="bilinear", align_corners=False
    )
    assert len(spy.calls) == 4 and torch.allclose(seen, resized, atol=1e-6)
    pool = torch.cat([p for _, p, _ in spy.calls])
    logits = torch.cat([lg for _, _, lg in spy.calls])
    is_mean, is_std, fid = _is_and_fid(pool[:4], logits[:4], pool[4:], splits=2)
    assert record["n_images"] == 4 and is_mean > 1 and fid > 0
    # a tiny random G draws near-identical birds: IS is 1 + O(1e-10), so compare IS - 1
    assert record["inception_score_mean"] - 1 == pytest.approx(is_mean - 1, rel=1e-3)
    assert record["inception_score_std"] == pytest.approx(is_std, rel=1e-3)
    assert record["fid"] == pytest.approx(fid, rel=1e-6)
