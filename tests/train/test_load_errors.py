"""A file of the wrong kind, or a damaged one, is one FileFormatError naming it."""

from __future__ import annotations

import re

import pytest
import torch
from train_helpers import tiny_gan_cfg

from attngan_fast.errors import FileFormatError
from attngan_fast.runtime.generation import load_generation_models
from attngan_fast.runtime.networks import build_generator, load_encoders
from attngan_fast.runtime.run_dir import load_vocab


def _named(path, *also):
    return pytest.raises(FileFormatError, match=re.escape(str(path)) + ".*" + ".*".join(also))


@pytest.fixture
def generator_file(tmp_path):
    path = tmp_path / "netG.pth"
    torch.save(build_generator(tiny_gan_cfg()).state_dict(), path)
    return path


def test_generator_given_as_text_encoder(tmp_path, damsm_files, generator_file):
    text = tmp_path / "enc" / "text_encoder0.pth"
    text.parent.mkdir()
    text.write_bytes(generator_file.read_bytes())
    (text.parent / "image_encoder0.pth").write_bytes(damsm_files[1].read_bytes())
    with _named(text, "not a DAMSM text encoder", "looks like an AttnGAN generator"):
        load_encoders(text)
    vocab = load_vocab(damsm_files[0].parent / "vocab.json")
    with _named(generator_file, "not a DAMSM text encoder", "looks like an AttnGAN generator"):
        load_generation_models(generator_file, generator_file, vocab)
    with _named(damsm_files[0], "not an AttnGAN generator", "looks like a DAMSM text encoder"):
        load_generation_models(damsm_files[0], damsm_files[0], vocab)


def test_damaged_encoder_and_pair_of_other_sizes(tmp_path, damsm_files):
    folder = tmp_path / "enc"
    folder.mkdir()
    text = folder / "text_encoder0.pth"
    text.write_bytes(damsm_files[0].read_bytes()[:1000])
    (folder / "image_encoder0.pth").write_bytes(damsm_files[1].read_bytes())
    with _named(text, "not a DAMSM text encoder", "damaged"):
        load_encoders(text)
    text.write_bytes(damsm_files[0].read_bytes())
    image = torch.load(damsm_files[1], weights_only=True)
    image["emb_features.weight"] = image["emb_features.weight"][:, :-1]
    torch.save(image, folder / "image_encoder0.pth")
    with _named(folder / "image_encoder0.pth", "of other sizes"):
        load_encoders(text)


def test_bad_vocabulary_json(tmp_path):
    path = tmp_path / "vocab.json"
    for data, reason in (
        (b'["<end>", "a"', "not a JSON file"),
        (b"\xff\xfe[]", "not a JSON file"),
        (b'{"a": 1}', "not a list of words"),
        (b'["a", "<end>"]', "index 0 must be"),
    ):
        path.write_bytes(data)
        with _named(path, reason):
            load_vocab(path)


def test_bad_run_and_attribute_json_are_named(tmp_path):
    from attngan_fast.data.synth_birds import load_synth_attributes
    from attngan_fast.runtime.run_dir import resolve_generation_files

    run = tmp_path / "run"
    (run / "Model").mkdir(parents=True)
    for name in ("Model/netG.pth", "Model/text_encoder.pth", "vocab.json"):
        (run / name).write_bytes(b"")
    (run / "run.json").write_text('{"legacy_mask": tru')
    with _named(run / "run.json", "not a JSON file"):
        resolve_generation_files(run)
    (tmp_path / "attributes.json").write_text("[1, 2]")
    with _named(tmp_path / "attributes.json", "no 'images' records"):
        load_synth_attributes(tmp_path)
