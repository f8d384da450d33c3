"""Every AttnGAN network is built here: from a ``Config``, from an ``EncoderSpec``, or from the
shapes of a state dict (so the original code's files load without a config).

- From a config (the original's ``cfg``-driven constructors): ``build_generator``,
  ``build_discriminators``, ``EncoderSpec.from_config``.
- The DAMSM encoder pair from its ``EncoderSpec``: ``build_text_encoder``, ``build_image_encoder``.
  Saved as the original saves them, ``text_encoder{epoch}.pth`` and ``image_encoder{epoch}.pth``
  (plain state dicts: the released ``text_encoder200.pth`` / ``image_encoder200.pth`` load), with
  ``encoders.json`` beside them recording what the state dicts cannot say (which image encoder,
  the small encoder's input size): ``save_encoders`` / ``load_encoders``.
- From a state dict alone: ``generator_kwargs`` / ``build_generator_from_state``,
  ``text_encoder_kwargs`` / ``build_text_encoder_from_state``, ``encoder_spec_from_state``; from a
  file: ``load_generator``, ``load_text_encoder``, ``load_image_encoder``.

A file of the wrong kind or shape (a generator given as a text encoder, a mismatched pair) is a
``FileFormatError`` naming the file, what it should be and what it looks like.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor, nn

from attngan_fast.config import Config
from attngan_fast.data._io import read_json
from attngan_fast.errors import FileFormatError
from attngan_fast.models import (
    CNN_ENCODER,
    D_NETS,
    G_NET,
    RNN_ENCODER,
    SmallImageEncoder,
    init_weights,
)
from attngan_fast.runtime.checkpoint import load_state_dict_file, save_atomic, state_dict_kind

META_FILE = "encoders.json"
IMAGE_ENCODERS = ("inception", "small")
GENERATOR = "an AttnGAN generator (netG*.pth)"
TEXT_ENCODER = "a DAMSM text encoder (text_encoder*.pth)"
IMAGE_ENCODER = "a DAMSM image encoder (image_encoder*.pth)"

Net = TypeVar("Net", bound=nn.Module)


# --- from a config ---------------------------------------------------------------------------


def build_generator(cfg: Config, legacy_mask: bool = False, init: bool = True) -> G_NET:
    """G_NET with GAN.GF_DIM, TEXT.EMBEDDING_DIM, GAN.CONDITION_DIM, GAN.Z_DIM, GAN.R_NUM and
    TREE.BRANCH_NUM stages; ``init`` applies the original's orthogonal ``weights_init``."""
    net = G_NET(
        ngf=cfg.GAN.GF_DIM,
        nef=cfg.TEXT.EMBEDDING_DIM,
        ncf=cfg.GAN.CONDITION_DIM,
        z_dim=cfg.GAN.Z_DIM,
        r_num=cfg.GAN.R_NUM,
        branch_num=cfg.TREE.BRANCH_NUM,
        legacy_mask=legacy_mask,
    )
    return init_weights(net) if init else net


def build_discriminators(cfg: Config, init: bool = True) -> nn.ModuleList:
    """One D per stage (D_NET64, D_NET128, D_NET256 up to TREE.BRANCH_NUM) with GAN.DF_DIM."""
    nets = nn.ModuleList(
        d_net(cfg.GAN.DF_DIM, cfg.TEXT.EMBEDDING_DIM) for d_net in D_NETS[: cfg.TREE.BRANCH_NUM]
    )
    return init_weights(nets) if init else nets


# --- the DAMSM encoder pair ------------------------------------------------------------------


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

    @classmethod
    def from_config(cls, cfg: Config, n_words: int, **image: Any) -> EncoderSpec:
        """The pair over ``n_words`` tokens with TEXT.EMBEDDING_DIM outputs and cfg.RNN_TYPE;
        ``image``: ``image_encoder``, ``small_ndf``, ``small_size``."""
        return cls(n_words=n_words, nef=cfg.TEXT.EMBEDDING_DIM, rnn_type=cfg.RNN_TYPE, **image)


def build_text_encoder(spec: EncoderSpec) -> RNN_ENCODER:
    """RNN_ENCODER over ``spec.n_words`` tokens, ``spec.nef`` outputs (both directions)."""
    return RNN_ENCODER(spec.n_words, nhidden=spec.nef, rnn_type=spec.rnn_type)


def build_image_encoder(spec: EncoderSpec) -> nn.Module:
    """CNN_ENCODER (load the Inception weights separately) or SmallImageEncoder, as ``spec``."""
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


def load_encoders(
    text_path: str | Path, image_path: str | Path | None = None
) -> tuple[RNN_ENCODER, nn.Module, EncoderSpec]:
    """Load a text encoder file and its image encoder (default: the file beside it), on the CPU,
    with the EncoderSpec of ``encoders.json`` beside the text encoder, else of their shapes.

    A file of the wrong kind (a generator given as the text encoder, a mismatched pair) is a
    FileFormatError naming it."""
    text_path = Path(text_path)
    image_path = Path(image_path) if image_path is not None else image_encoder_path(text_path)
    text_state = _encoder_state(text_path, TEXT_ENCODER)
    image_state = _encoder_state(image_path, IMAGE_ENCODER)
    meta = text_path.parent / META_FILE
    if meta.is_file():
        spec = _read_spec(meta)
    else:
        try:
            spec = encoder_spec_from_state(text_state, image_state)
        except KeyError as exc:  # a state dict of the right kind with keys missing
            reason = exc.args[0] if exc.args else exc
            raise FileFormatError(f"{text_path} / {image_path}: {reason}; damaged?") from None
    source = meta if meta.is_file() else f"the shapes of {text_path}"
    text = _load_into(build_text_encoder(spec), text_state, text_path, TEXT_ENCODER, source)
    image = _load_into(build_image_encoder(spec), image_state, image_path, IMAGE_ENCODER, source)
    return text, image, spec


def load_image_encoder(
    path: str | Path,
    spec: EncoderSpec | None = None,
    text_state: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """A DAMSM image encoder from its file, in eval mode: the architecture of ``spec`` (what a
    training run's ``run.json`` records), else the shapes of the file and of its text encoder's
    state dict ``text_state``."""
    path = Path(path)
    state = _encoder_state(path, IMAGE_ENCODER)
    source = "the given encoder spec"
    if spec is None:
        if text_state is None:
            raise ValueError("load_image_encoder needs the pair's spec or its text encoder state")
        spec, source = encoder_spec_from_state(text_state, state), f"the shapes of {path}"
    return _load_into(build_image_encoder(spec), state, path, IMAGE_ENCODER, source).eval()


def freeze(module: Net) -> Net:
    """Eval mode and no gradients for any parameter (the encoders during GAN training)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _read_spec(meta_file: Path) -> EncoderSpec:
    meta = read_json(meta_file, "encoders.json (written by pretrain-damsm) describes them")
    try:
        return EncoderSpec(**meta)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{meta_file}: not an encoders.json ({exc})") from None


def _encoder_state(path: Path, what: str) -> dict[str, Tensor]:
    """The state dict of an encoder file; FileFormatError when it is another kind of file."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no encoder file at {path} (DAMSM encoders are text_encoder<N>.pth and "
            "image_encoder<N>.pth, written by `attngan-fast pretrain-damsm`)"
        )
    state = strip_prefix(load_state_dict_file(path, what))
    kind = state_dict_kind(state)
    if kind != what:
        seems = f"it looks like {kind}" if kind else "its keys are of no encoder"
        raise FileFormatError(f"{path}: not {what}; {seems}")
    return state


def _load_into(
    module: Net, state: Mapping[str, Tensor], path: Path, what: str, source: object
) -> Net:
    """``module.load_state_dict(state)``; a size mismatch is a FileFormatError naming ``path``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise FileFormatError(
            f"{path}: {what} of other sizes than {source} says ({str(exc).splitlines()[0][:200]})"
        ) from None
    return module


# --- from a state dict -----------------------------------------------------------------------


def strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """State-dict keys without the ``module.`` of (Distributed)DataParallel wrappers."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def generator_kwargs(state: Mapping[str, Tensor]) -> dict[str, int]:
    """G_NET's arguments (ngf, nef, ncf, z_dim, r_num, branch_num) read from its state dict."""
    try:
        ca = state["ca_net.fc.weight"]  # 4 ncf x nef
        fc = state["h_net1.fc.0.weight"]  # 32 * 16 ngf x (ncf + z_dim)
        ngf = state["img_net1.img.0.weight"].shape[1]
    except KeyError as exc:
        raise KeyError(f"not an AttnGAN generator state dict: no {exc} key") from None
    branch_num = 1 + sum(f"img_net{i}.img.0.weight" in state for i in (2, 3))
    residual = {k.split(".")[2] for k in state if k.startswith("h_net2.residual.")}
    ncf = ca.shape[0] // 4
    return {
        "ngf": ngf,
        "nef": ca.shape[1],
        "ncf": ncf,
        "z_dim": fc.shape[1] - ncf,
        "r_num": len(residual) if branch_num > 1 else 2,
        "branch_num": branch_num,
    }


def build_generator_from_state(state: Mapping[str, Tensor], legacy_mask: bool = False) -> G_NET:
    """A G_NET shaped like ``state`` with its weights, in eval mode.

    BatchNorm ``num_batches_tracked`` buffers may be missing (state dicts saved by PyTorch < 0.4).
    """
    state = strip_prefix(state)
    netG = G_NET(**generator_kwargs(state), legacy_mask=legacy_mask)
    result = netG.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise KeyError(
            f"generator state dict does not match G_NET: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return netG.eval()


def text_encoder_kwargs(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """RNN_ENCODER's arguments (ntoken, ninput, nhidden, nlayers, bidirectional, rnn_type) read
    from its state dict."""
    try:
        ntoken, ninput = state["encoder.weight"].shape
        per_direction = state["rnn.weight_hh_l0"].shape[1]
        gates = state["rnn.weight_ih_l0"].shape[0] // per_direction
    except KeyError as exc:
        raise KeyError(f"not an RNN_ENCODER state dict: no {exc} key") from None
    bidirectional = "rnn.weight_ih_l0_reverse" in state
    layers = {k.split("_l")[1].split("_")[0] for k in state if k.startswith("rnn.weight_ih_l")}
    return {
        "ntoken": ntoken,
        "ninput": ninput,
        "nhidden": per_direction * (2 if bidirectional else 1),
        "nlayers": len(layers),
        "bidirectional": bidirectional,
        "rnn_type": "LSTM" if gates == 4 else "GRU",
    }


def build_text_encoder_from_state(state: Mapping[str, Tensor]) -> RNN_ENCODER:
    """An RNN_ENCODER shaped like ``state`` (vocabulary, sizes, LSTM or GRU), in eval mode."""
    state = strip_prefix(state)
    encoder = RNN_ENCODER(**text_encoder_kwargs(state))
    encoder.load_state_dict(state)
    return encoder.eval()


def encoder_spec_from_state(
    text_state: Mapping[str, Tensor], image_state: Mapping[str, Tensor] | None = None
) -> EncoderSpec:
    """The EncoderSpec of a saved pair, from its shapes (``small_size`` cannot be read from
    them: it is the default unless ``encoders.json`` says otherwise)."""
    text = text_encoder_kwargs(text_state)
    spec = EncoderSpec(n_words=text["ntoken"], nef=text["nhidden"], rnn_type=text["rnn_type"])
    if image_state is not None and "Conv2d_1a_3x3.conv.weight" not in image_state:
        spec.image_encoder = "small"
        spec.small_ndf = image_state["emb_features.weight"].shape[1] // 4
    return spec


def load_generator(path: str | Path, legacy_mask: bool = False) -> G_NET:
    """G from a netG state dict file (this package's or the original's), shaped by its keys."""
    return _build_from_file(path, GENERATOR, lambda s: build_generator_from_state(s, legacy_mask))


def load_text_encoder(path: str | Path) -> RNN_ENCODER:
    """The DAMSM text encoder of a ``text_encoder*.pth`` file, shaped by its keys."""
    return _build_from_file(path, TEXT_ENCODER, build_text_encoder_from_state)


def _build_from_file(path: str | Path, what: str, build: Callable[[dict[str, Tensor]], Net]) -> Net:
    """``build(state dict of path)``; a state dict of the wrong kind or shape is a
    FileFormatError naming the file, what it should be and what it seems to be."""
    state = load_state_dict_file(path, what)
    try:
        return build(state)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        kind = state_dict_kind(state)
        seems = f"; it looks like {kind}" if kind and kind != what else ""
        raise FileFormatError(
            f"{path}: not {what} ({str(reason).splitlines()[0][:200]}){seems}"
        ) from None
