"""The DAMSM encoder pair: build it, save it in the original format, load it back.

Files are those of the original code: ``text_encoder{epoch}.pth`` and ``image_encoder{epoch}.pth``,
each a plain ``state_dict`` (the released ``text_encoder200.pth`` / ``image_encoder200.pth`` load).
Beside them ``encoders.json`` records what the state dicts cannot say (which image encoder, the
small encoder's input size); without it the architecture is inferred from the keys and shapes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from attngan_fast.models import CNN_ENCODER, RNN_ENCODER, SmallImageEncoder
from attngan_fast.train.checkpoint import save_atomic

META_FILE = "encoders.json"
IMAGE_ENCODERS = ("inception", "small")


@dataclass
class EncoderSpec:
    """What the encoder pair is: vocabulary size, embedding size and image encoder kind.

    ``image_encoder``: ``inception`` (the original CNN_ENCODER, 17 x 17 regions; needs ImageNet
    Inception-v3 weights to be useful) or ``small`` (``SmallImageEncoder``, trained from scratch,
    ``small_size / 8`` regions a side, ``small_ndf`` base channels).
    """

    n_words: int
    nef: int = 256
    rnn_type: str = "LSTM"
    image_encoder: str = "inception"
    small_ndf: int = 64
    small_size: int = 64

    def __post_init__(self) -> None:
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(
                f"image encoder must be one of {', '.join(IMAGE_ENCODERS)}, "
                f"got {self.image_encoder!r}"
            )


def build_text_encoder(spec: EncoderSpec) -> RNN_ENCODER:
    return RNN_ENCODER(spec.n_words, nhidden=spec.nef, rnn_type=spec.rnn_type)


def build_image_encoder(spec: EncoderSpec) -> nn.Module:
    if spec.image_encoder == "inception":
        return CNN_ENCODER(spec.nef)
    return SmallImageEncoder(spec.nef, ndf=spec.small_ndf, image_size=spec.small_size)


def save_encoders(
    folder: str | Path, epoch: int, text: nn.Module, image: nn.Module, spec: EncoderSpec
) -> tuple[Path, Path]:
    """Write ``text_encoder{epoch}.pth``, ``image_encoder{epoch}.pth`` and ``encoders.json``."""
    folder = Path(folder)
    text_path = save_atomic(text.state_dict(), folder / f"text_encoder{epoch}.pth")
    image_path = save_atomic(image.state_dict(), folder / f"image_encoder{epoch}.pth")
    (folder / META_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n", encoding="utf-8")
    return text_path, image_path


def image_encoder_path(text_path: str | Path) -> Path:
    """The image encoder beside a text encoder file (the original's name substitution)."""
    text_path = Path(text_path)
    return text_path.with_name(text_path.name.replace("text_encoder", "image_encoder"))


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"no encoder file at {path} (DAMSM encoders are text_encoder<N>.pth and "
            "image_encoder<N>.pth, written by `attngan-fast pretrain-damsm`)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def infer_spec(
    text_state: dict[str, torch.Tensor],
    image_state: dict[str, torch.Tensor] | None,
    meta_file: Path | None = None,
) -> EncoderSpec:
    """The EncoderSpec of saved state dicts: from ``encoders.json`` if present, else the shapes."""
    if meta_file is not None and meta_file.is_file():
        return EncoderSpec(**json.loads(meta_file.read_text(encoding="utf-8")))
    n_words = text_state["encoder.weight"].shape[0]
    nef = 2 * text_state["rnn.weight_hh_l0"].shape[1]
    rnn_type = "LSTM" if text_state["rnn.weight_ih_l0"].shape[0] == 4 * nef // 2 else "GRU"
    spec = EncoderSpec(n_words=n_words, nef=nef, rnn_type=rnn_type)
    if image_state is not None and "Conv2d_1a_3x3.conv.weight" not in image_state:
        spec.image_encoder = "small"
        spec.small_ndf = image_state["emb_features.weight"].shape[1] // 4
    return spec


def load_encoders(
    text_path: str | Path, image_path: str | Path | None = None
) -> tuple[RNN_ENCODER, nn.Module, EncoderSpec]:
    """Load a text encoder file and its image encoder (default: the file beside it), on the CPU."""
    text_path = Path(text_path)
    image_path = Path(image_path) if image_path is not None else image_encoder_path(text_path)
    text_state, image_state = _load_state(text_path), _load_state(image_path)
    spec = infer_spec(text_state, image_state, text_path.parent / META_FILE)
    text, image = build_text_encoder(spec), build_image_encoder(spec)
    text.load_state_dict(text_state)
    image.load_state_dict(image_state)
    return text, image, spec


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for any parameter (the encoders during GAN training)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
