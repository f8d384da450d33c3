"""Every AttnGAN network is built here: from a ``Config``, from an ``EncoderSpec``, or from the
shapes of a state dict (so the original code's files load without a config).

- From a config (the original's ``cfg``-driven constructors): ``generator_spec`` (which member
  of the model family: AttnGAN, StackGAN-v2's tree, GAN-INT-CLS, G_DCGAN), ``build_generator``,
  ``build_discriminators``, ``training_objective`` (the loss terms), ``EncoderSpec.from_config``.
- The DAMSM encoder pair from its ``EncoderSpec``: ``build_text_encoder``, ``build_image_encoder``.
  Saved as the original saves them, ``text_encoder{epoch}.pth`` and ``image_encoder{epoch}.pth``
  (plain state dicts: the released ``text_encoder200.pth`` / ``image_encoder200.pth`` load), with
  ``encoders.json`` beside them recording what the state dicts cannot say (which image encoder,
  the small encoder's input size): ``save_encoders`` / ``load_encoders``.
- From a state dict alone: ``generator_spec_from_state`` / ``build_generator_from_state``,
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
from attngan_fast.losses import Objective
from attngan_fast.models import (
    CNN_ENCODER,
    D_NETS,
    G_DCGAN,
    G_NET,
    RNN_ENCODER,
    GeneratorSpec,
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


def generator_spec(cfg: Config) -> GeneratorSpec:
    """The generator a config describes: GAN.GF_DIM, TEXT.EMBEDDING_DIM, GAN.CONDITION_DIM,
    GAN.Z_DIM, GAN.R_NUM, TREE.BRANCH_NUM stages, every later stage attending to the words when
    GAN.B_ATTENTION, GAN.CONDITIONING, and one image head only (G_DCGAN) when GAN.B_DCGAN."""
    return GeneratorSpec(
        ngf=cfg.GAN.GF_DIM,
        nef=cfg.TEXT.EMBEDDING_DIM,
        ncf=cfg.GAN.CONDITION_DIM,
        z_dim=cfg.GAN.Z_DIM,
        r_num=cfg.GAN.R_NUM,
        branch_num=cfg.TREE.BRANCH_NUM,
        attention=(cfg.GAN.B_ATTENTION,) * (cfg.TREE.BRANCH_NUM - 1),
        conditioning=cfg.GAN.CONDITIONING,
        single_image=cfg.GAN.B_DCGAN,
    )


def training_objective(cfg: Config) -> Objective:
    """The loss terms a config asks for: TRAIN.SMOOTH (DAMSM's LAMBDA and GAMMA1-3) and
    TRAIN.COEFF (KL, COLOR_LOSS, INTERPOLATION)."""
    smooth, coeff = cfg.TRAIN.SMOOTH, cfg.TRAIN.COEFF
    return Objective(
        lambda_damsm=smooth.LAMBDA,
        gamma1=smooth.GAMMA1,
        gamma2=smooth.GAMMA2,
        gamma3=smooth.GAMMA3,
        kl=coeff.KL,
        colour=coeff.COLOR_LOSS,
        interpolation=coeff.INTERPOLATION,
    )


def build_generator(
    source: Config | GeneratorSpec, legacy_mask: bool = False, init: bool = True
) -> G_NET:
    """The generator of a config (``generator_spec``) or a spec: G_NET, or G_DCGAN for a single
    image head; ``init`` applies the original's orthogonal ``weights_init``."""
    spec = generator_spec(source) if isinstance(source, Config) else source
    net_class = G_DCGAN if spec.single_image else G_NET
    net = net_class(
        ngf=spec.ngf,
        nef=spec.nef,
        ncf=spec.ncf,
        z_dim=spec.z_dim,
        r_num=spec.r_num,
        branch_num=spec.branch_num,
        legacy_mask=legacy_mask,
        attention=spec.attention,
        conditioning=spec.conditioning,
    )
    return init_weights(net) if init else net


def build_discriminators(cfg: Config, init: bool = True) -> nn.ModuleList:
    """One D per image G draws (D_NET64, D_NET128, D_NET256 of the stages up to
    TREE.BRANCH_NUM; with GAN.B_DCGAN only the last one, without the unconditional head, as the
    original), GAN.DF_DIM wide; with GAN.CONDITIONING PROJECTION the conditional heads project
    the sentence to GAN.CONDITION_DIM (GAN-INT-CLS)."""
    spec = generator_spec(cfg)
    text_dim = cfg.GAN.CONDITION_DIM if spec.conditioning == "PROJECTION" else 0
    nets = nn.ModuleList(
        D_NETS[stage](
            cfg.GAN.DF_DIM, cfg.TEXT.EMBEDDING_DIM, b_jcu=not spec.single_image, text_dim=text_dim
        )
        for stage in spec.image_stages
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


def encoder_spec_beside(text_path: str | Path) -> EncoderSpec | None:
    """The EncoderSpec of the ``encoders.json`` beside a text encoder file, None without one."""
    meta = Path(text_path).parent / META_FILE
    return _read_spec(meta) if meta.is_file() else None


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


def generator_spec_from_state(state: Mapping[str, Tensor]) -> GeneratorSpec:
    """The GeneratorSpec of a generator's state dict: G_NET or G_DCGAN (``img_net``), CA_NET or
    TEXT_PROJ, stages, which of them attend, widths and residual blocks."""
    try:
        fc = state["h_net1.fc.0.weight"]  # 32 * 16 ngf x (ncf + z_dim)
    except KeyError as exc:
        raise KeyError(f"not an AttnGAN generator state dict: no {exc} key") from None
    conditioning = "PROJECTION" if "text_proj.fc.weight" in state else "CA_NET"
    try:  # CA_NET: Linear(nef, 4 ncf); TEXT_PROJ: Linear(nef, ncf)
        cond = state["ca_net.fc.weight" if conditioning == "CA_NET" else "text_proj.fc.weight"]
    except KeyError as exc:
        raise KeyError(f"not an AttnGAN generator state dict: no {exc} key") from None
    ncf = cond.shape[0] // 4 if conditioning == "CA_NET" else cond.shape[0]
    single_image = "img_net.img.0.weight" in state
    head = "img_net.img.0.weight" if single_image else "img_net1.img.0.weight"
    if head not in state:
        raise KeyError(f"not an AttnGAN generator state dict: no {head!r} key")
    branch_num = 1 + sum(any(k.startswith(f"h_net{i}.") for k in state) for i in (2, 3))
    attention = tuple(f"h_net{i}.att.conv_context.weight" in state for i in (2, 3))
    residual = {k.split(".")[2] for k in state if k.startswith("h_net2.residual.")}
    return GeneratorSpec(
        ngf=state[head].shape[1],
        nef=cond.shape[1],
        ncf=ncf,
        z_dim=fc.shape[1] - ncf,
        r_num=len(residual) if branch_num > 1 else 2,
        branch_num=branch_num,
        attention=attention[: branch_num - 1],
        conditioning=conditioning,
        single_image=single_image,
    )


def generator_kwargs(state: Mapping[str, Tensor]) -> dict[str, int]:
    """G_NET's size arguments (ngf, nef, ncf, z_dim, r_num, branch_num) read from its state
    dict (``generator_spec_from_state`` gives the whole spec)."""
    spec = generator_spec_from_state(state)
    names = ("ngf", "nef", "ncf", "z_dim", "r_num", "branch_num")
    return {name: getattr(spec, name) for name in names}


def build_generator_from_state(state: Mapping[str, Tensor], legacy_mask: bool = False) -> G_NET:
    """A generator (G_NET or G_DCGAN) shaped like ``state`` with its weights, in eval mode.

    BatchNorm ``num_batches_tracked`` buffers may be missing (state dicts saved by PyTorch < 0.4).
    """
    state = strip_prefix(state)
    netG = build_generator(generator_spec_from_state(state), legacy_mask, init=False)
    result = netG.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise KeyError(
            f"generator state dict does not match {type(netG).__name__}: missing {missing[:5]}, "
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
