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

from attngan_fast.data._io import read_json
from attngan_fast.errors import FileFormatError
from attngan_fast.models import CNN_ENCODER, RNN_ENCODER, SmallImageEncoder
from attngan_fast.runtime.checkpoint import load_torch_file, save_atomic, state_dict_kind

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


def _load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"no encoder file at {path} (DAMSM encoders are text_encoder<N>.pth and "
            "image_encoder<N>.pth, written by `attngan-fast pretrain-damsm`)"
        )
    state = load_torch_file(path, what=what)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise FileFormatError(f"{path} does not hold a state dict; expected {what}")
    return state


def infer_spec(
    text_state: dict[str, torch.Tensor],
    image_state: dict[str, torch.Tensor] | None,
    meta_file: Path | None = None,
) -> EncoderSpec:
    """The EncoderSpec of saved state dicts: from ``encoders.json`` if present, else the shapes."""
    if meta_file is not None and meta_file.is_file():
        meta = read_json(meta_file, "encoders.json (written by pretrain-damsm) describes them")
        try:
            return EncoderSpec(**meta)
        except (TypeError, ValueError) as exc:
            raise FileFormatError(f"{meta_file}: not an encoders.json ({exc})") from None
    n_words = text_state["encoder.weight"].shape[0]
    nef = 2 * text_state["rnn.weight_hh_l0"].shape[1]
    rnn_type = "LSTM" if text_state["rnn.weight_ih_l0"].shape[0] == 4 * nef // 2 else "GRU"
    spec = EncoderSpec(n_words=n_words, nef=nef, rnn_type=rnn_type)
    if image_state is not None and "Conv2d_1a_3x3.conv.weight" not in image_state:
        spec.image_encoder = "small"
        spec.small_ndf = image_state["emb_features.weight"].shape[1] // 4
    return spec


TEXT_ENCODER = "a DAMSM text encoder (text_encoder*.pth)"
IMAGE_ENCODER = "a DAMSM image encoder (image_encoder*.pth)"


def load_encoders(
    text_path: str | Path, image_path: str | Path | None = None
) -> tuple[RNN_ENCODER, nn.Module, EncoderSpec]:
    """Load a text encoder file and its image encoder (default: the file beside it), on the CPU.

    A file of the wrong kind (a generator given as the text encoder, a mismatched pair) is a
    FileFormatError naming it."""
    text_path = Path(text_path)
    image_path = Path(image_path) if image_path is not None else image_encoder_path(text_path)
    text_state = _load_state(text_path, TEXT_ENCODER)
    image_state = _load_state(image_path, IMAGE_ENCODER)
    _expect_kind(text_path, text_state, TEXT_ENCODER)
    _expect_kind(image_path, image_state, IMAGE_ENCODER)
    try:
        spec = infer_spec(text_state, image_state, text_path.parent / META_FILE)
    except KeyError as exc:  # a state dict of the right kind with keys missing
        raise FileFormatError(f"{text_path} / {image_path}: no {exc} key; damaged?") from None
    text, image = build_text_encoder(spec), build_image_encoder(spec)
    for module, state, path, what in (
        (text, text_state, text_path, TEXT_ENCODER),
        (image, image_state, image_path, IMAGE_ENCODER),
    ):
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            meta = text_path.parent / META_FILE
            source = meta if meta.is_file() else f"the shapes of {text_path}"
            raise FileFormatError(
                f"{path}: {what} of other sizes than {source} says "
                f"({str(exc).splitlines()[0][:200]})"
            ) from None
    return text, image, spec


def _expect_kind(path: Path, state: dict[str, torch.Tensor], what: str) -> None:
    kind = state_dict_kind(state)
    if kind != what:
        seems = f"it looks like {kind}" if kind else "its keys are of no encoder"
        raise FileFormatError(f"{path}: not {what}; {seems}")


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for any parameter (the encoders during GAN training)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
