"""Networks built from a config, an EncoderSpec or a state dict's shapes, and loaded from files."""

import json

import pytest
import torch

from attngan_fast.config import config_from_dict, preset
from attngan_fast.errors import FileFormatError
from attngan_fast.models import G_NET, RNN_ENCODER, SmallImageEncoder
from attngan_fast.runtime.networks import (
    EncoderSpec,
    build_generator_from_state,
    build_image_encoder,
    build_text_encoder,
    build_text_encoder_from_state,
    encoder_spec_from_state,
    generator_kwargs,
    load_encoders,
    load_image_encoder,
    load_text_encoder,
    save_encoders,
)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


def test_generator_shape_is_read_from_the_state_dict():
    for branch_num in (1, 2, 3):
        netG = G_NET(ngf=2, nef=16, ncf=6, z_dim=8, r_num=3, branch_num=branch_num)
        kwargs = generator_kwargs(netG.state_dict())
        assert kwargs == {
            "ngf": 2, "nef": 16, "ncf": 6, "z_dim": 8,
            "r_num": 3 if branch_num > 1 else 2, "branch_num": branch_num,
        }  # fmt: skip
    # DataParallel prefixes and missing num_batches_tracked (PyTorch 0.3 files) are accepted
    state = {f"module.{k}": v for k, v in netG.state_dict().items() if "num_batches" not in k}
    rebuilt = build_generator_from_state(state)
    for k, v in rebuilt.state_dict().items():
        if "num_batches" not in k:
            torch.testing.assert_close(v, netG.state_dict()[k])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"nhidden": 16},
        {"nhidden": 8, "bidirectional": False},
        {"nhidden": 12, "rnn_type": "GRU"},
        {"nhidden": 16, "nlayers": 2},
    ],
)
def test_text_encoder_shape_is_read_from_the_state_dict(kwargs):
    encoder = RNN_ENCODER(11, ninput=10, **kwargs)
    state = {f"module.{k}": v for k, v in encoder.state_dict().items()}  # DDP-saved
    rebuilt = build_text_encoder_from_state(state)
    assert not rebuilt.training and rebuilt.rnn_type == encoder.rnn_type
    _same_state(rebuilt, encoder)


def test_encoder_spec_from_config_and_from_state():
    cfg = config_from_dict({"TEXT": {"EMBEDDING_DIM": 16}, "RNN_TYPE": "GRU"}, preset("birds"))
    spec = EncoderSpec.from_config(cfg, 21, image_encoder="small", small_ndf=4, small_size=32)
    assert spec == EncoderSpec(21, 16, "GRU", "small", small_ndf=4, small_size=32)
    text, image = build_text_encoder(spec), build_image_encoder(spec)
    assert isinstance(image, SmallImageEncoder) and image.image_size == 32
    found = encoder_spec_from_state(text.state_dict(), image.state_dict())
    assert found == EncoderSpec(21, 16, "GRU", "small", small_ndf=4)  # the size is not in them
    with pytest.raises(ValueError, match="image encoder must be one of"):
        EncoderSpec(21, image_encoder="resnet")


def test_encoder_pair_round_trip_and_single_files(tmp_path):
    spec = EncoderSpec(13, nef=8, image_encoder="small", small_ndf=2, small_size=32)
    text, image = build_text_encoder(spec), build_image_encoder(spec)
    text_path, image_path = save_encoders(tmp_path, 5, text, image, spec)
    assert json.loads((tmp_path / "encoders.json").read_text())["small_size"] == 32
    text2, image2, spec2 = load_encoders(text_path)
    assert spec2 == spec and image2.image_size == 32
    _same_state(text2, text)
    _same_state(image2, image)
    _same_state(load_text_encoder(text_path), text)
    alone = load_image_encoder(image_path, text_state=text.state_dict())  # from the shapes
    assert not alone.training and alone.image_size == 64
    _same_state(alone, image)
    assert load_image_encoder(image_path, spec).image_size == 32
    with pytest.raises(FileFormatError, match=r"text_encoder5\.pth: not a DAMSM image encoder.*"
                       r"looks like a DAMSM text encoder"):  # fmt: skip
        load_image_encoder(text_path, spec)
    with pytest.raises(FileFormatError, match=r"image_encoder5\.pth: .* of other sizes"):
        load_image_encoder(image_path, EncoderSpec(13, nef=8, image_encoder="small", small_ndf=3))
