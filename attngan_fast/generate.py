"""Images from captions with a trained generator: every stage's picture and the attention figure.

    models = load_generation_models("netG_epoch_600.pth", "text_encoder200.pth", vocab)
    written = generate(models, ["this bird has wings that are black and a white belly"], "out/")

The generator's architecture (stages, GF_DIM, residual blocks, embedding sizes) is read from its
state dict, so ``netG_epoch_*.pth`` files of the original code load as well as this package's.
Captions are tokenised as in training; words the vocabulary does not know are reported in an
``UnknownWordsWarning`` (a caption with no known word raises ValueError).

Output, per caption ``i`` and sample ``k``: ``{i:03d}_{slug}/sample{k}_stage{s}_{size}px.png`` for
each stage s, and ``{i:03d}_{slug}/sample{k}_attention.png`` (one row per stage with attention:
the stage's image, then each word's attention map over it). Results depend only on the seed, the
caption's position and the sample index.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attngan_fast.data._io import read_json
from attngan_fast.data.captions import load_captions_pickle
from attngan_fast.data.vocab import Vocabulary
from attngan_fast.errors import UsageError
from attngan_fast.models.generator import G_NET
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.runtime.networks import load_generator, load_text_encoder
from attngan_fast.runtime.run_dir import load_vocab
from attngan_fast.viz import save_attention_figure, save_image

GenerateFn = Callable[[Tensor, Tensor], Tensor]
"""(captions B x T word indices, 0-padded; lengths B) -> images B x 3 x s x s in [-1, 1]."""


class UnknownWordsWarning(UserWarning):
    """Some words of a caption are not in the model's vocabulary and were left out."""


@dataclass
class GenerationModels:
    """What generating needs: G (EMA weights), the DAMSM text encoder and the vocabulary."""

    netG: G_NET
    text_encoder: RNN_ENCODER
    vocab: Vocabulary

    @property
    def device(self) -> torch.device:
        return next(self.netG.parameters()).device

    def to(self, device: str | torch.device) -> GenerationModels:
        self.netG.to(device)
        self.text_encoder.to(device)
        return self


@dataclass
class EncodedPrompt:
    text: str
    ids: list[int]
    words: list[str]  # the known words, in order (what the attention figure shows)
    unknown: list[str]


def encode_prompt(vocab: Vocabulary, text: str) -> EncodedPrompt:
    """Tokenise and encode one caption (unknown words left out and listed); raise ValueError for
    a caption without any known word."""
    enc = vocab.encode(text)
    if not enc.ids:
        detail = f"unknown words: {', '.join(enc.unknown)}" if enc.unknown else "no words"
        raise ValueError(f"caption {text!r} has no word the model knows ({detail})")
    return EncodedPrompt(text, enc.ids, [vocab.ixtoword[i] for i in enc.ids], enc.unknown)


def encode_prompts(vocab: Vocabulary, captions: Sequence[str]) -> list[EncodedPrompt]:
    """``encode_prompt`` on each caption; warn (UnknownWordsWarning) listing each caption's
    unknown words."""
    if not captions:
        raise ValueError("no caption given")
    prompts = []
    for text in captions:
        prompt = encode_prompt(vocab, text)
        if prompt.unknown:
            warnings.warn(
                f"caption {text!r}: {len(prompt.unknown)} word(s) not in the model's vocabulary "
                f"were left out: {', '.join(prompt.unknown)}",
                UnknownWordsWarning,
                stacklevel=2,
            )
        prompts.append(prompt)
    return prompts


@torch.no_grad()
def run_generator(
    models: GenerationModels, captions: Tensor, cap_lens: Tensor, seed: int, need_attn: bool = True
) -> tuple[list[Tensor], list[Tensor]]:
    """G on a batch of captions (B x T word indices, 0-padded; lengths B), in eval mode.

    Returns (images per stage, B x 3 x s x s in [-1, 1]; attention maps per stage with attention,
    B x T x h x w), on the CPU. z and CA_NET's noise are drawn inside ``torch.random.fork_rng``
    after ``torch.manual_seed(seed)``: the output depends on nothing else, and the caller's
    random stream is left untouched.
    """
    device = models.device
    captions = captions.to(device)
    z_dim = models.netG.h_net1.in_dim - models.netG.ca_net.c_dim
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        words, sent = models.text_encoder(captions, cap_lens)
        z = torch.randn(len(captions), z_dim, device=device)
        mask = (captions == 0)[:, : words.shape[2]]
        fake_imgs, att_maps, _, _ = models.netG(z, sent, words, mask, need_attn=need_attn)
    return [x.float().cpu() for x in fake_imgs], [a.float().cpu() for a in att_maps]


def sample_images(
    models: GenerationModels, ids: Sequence[int], n_samples: int = 1, seed: int = 0
) -> tuple[list[Tensor], list[Tensor]]:
    """``n_samples`` images of one caption (word indices): ``run_generator`` on it repeated."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    captions = torch.tensor([list(ids)] * n_samples, dtype=torch.long)
    cap_lens = torch.full((n_samples,), len(ids), dtype=torch.long)
    return run_generator(models, captions, cap_lens, seed)


def batch_generate_fn(
    models: GenerationModels, seed: int = 0
) -> Callable[[Tensor, Tensor], Tensor]:
    """A function (captions B x T, lengths B) -> last-stage images B x 3 x s x s for evaluation.

    The i-th call draws its noise with seed ``seed + i``, so a sequence of calls is reproducible.
    """
    models.netG.eval()
    models.text_encoder.eval()
    calls = itertools.count()

    def generate_batch(captions: Tensor, cap_lens: Tensor) -> Tensor:
        images, _ = run_generator(models, captions, cap_lens, seed + next(calls), need_attn=False)
        return images[-1]

    return generate_batch


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "caption"


def generate(
    models: GenerationModels,
    captions: Sequence[str],
    out_dir: str | Path,
    n_samples: int = 1,
    seed: int = 0,
    attention: bool = True,
) -> list[Path]:
    """Write every stage's image (and the attention figure) of ``n_samples`` samples per caption
    under ``out_dir``; return the written paths. See the module docstring for the file names."""
    models.netG.eval()
    models.text_encoder.eval()
    prompts = encode_prompts(models.vocab, captions)
    out_dir = Path(out_dir)
    written = []
    for i, prompt in enumerate(prompts):
        folder = out_dir / f"{i:03d}_{_slug(prompt.text)}"
        images, att_maps = sample_images(models, prompt.ids, n_samples, seed + i)
        for k in range(n_samples):
            for s, stage in enumerate(images, 1):
                size = stage.shape[-1]
                written.append(save_image(stage[k], folder / f"sample{k}_stage{s}_{size}px.png"))
            if attention and att_maps:
                rows = images[1 : 1 + len(att_maps)]
                written.append(
                    save_attention_figure(
                        folder / f"sample{k}_attention.png",
                        [img[k] for img in rows],
                        [att[k] for att in att_maps],
                        prompt.words,
                        row_labels=[f"{img.shape[-1]} px" for img in rows],
                    )
                )
        (folder / "caption.txt").write_text(
            f"{prompt.text}\nwords: {' '.join(prompt.words)}\n"
            + (f"unknown: {' '.join(prompt.unknown)}\n" if prompt.unknown else ""),
            encoding="utf-8",
        )
    return written


def load_generation_models(
    netG_path: str | Path,
    text_encoder_path: str | Path,
    vocab: Vocabulary,
    device: str | torch.device = "cpu",
    legacy_mask: bool = False,
) -> GenerationModels:
    """G from a netG state dict file (EMA weights) and the text encoder from its file."""
    netG = load_generator(netG_path, legacy_mask)
    text_encoder = load_text_encoder(text_encoder_path)
    if text_encoder.ntoken != len(vocab):
        raise UsageError(
            f"the text encoder {text_encoder_path} knows {text_encoder.ntoken} words but the "
            f"vocabulary has {len(vocab)}: they come from different datasets"
        )
    return GenerationModels(netG, text_encoder, vocab).to(device)


@dataclass
class GenerationFiles:
    """Where a trained model's parts are: G (EMA weights), text encoder, vocabulary."""

    netG: Path
    text_encoder: Path
    vocab: Path
    legacy_mask: bool = False


def _latest(folder: Path, pattern: str) -> Path | None:
    """The file matching ``pattern`` (one ``*``) with the largest number in it, if any."""
    found = []
    for path in folder.glob(pattern):
        digits = re.findall(r"\d+", path.stem)
        found.append((int(digits[-1]) if digits else -1, path.name, path))
    return max(found)[2] if found else None


def _first(candidates: Sequence[Path | None]) -> Path | None:
    return next((p for p in candidates if p is not None and p.is_file()), None)


def resolve_generation_files(
    checkpoint: str | Path,
    text_encoder: str | Path | None = None,
    vocab: str | Path | None = None,
) -> GenerationFiles:
    """Find G, the text encoder and the vocabulary from ``checkpoint``.

    ``checkpoint`` is a training run's folder (``Model/netG.pth`` or the latest
    ``Model/netG_epoch_*.pth``, ``Model/text_encoder.pth``, ``vocab.json``), its ``Model`` folder,
    or a netG file (original ``netG_epoch_600.pth`` included). ``text_encoder`` (a
    ``text_encoder*.pth``) and ``vocab`` (``vocab.json`` or the original's ``captions.pickle``)
    override what is found; for original checkpoints give both.
    """
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint file or folder there")
    if path.is_file():
        netG, model_dir = path, path.parent
    else:
        model_dir = path / "Model" if (path / "Model").is_dir() else path
        netG = _first([model_dir / "netG.pth", _latest(model_dir, "netG_epoch_*.pth")])
        if netG is None:
            raise FileNotFoundError(
                f"{path}: no generator there (expected Model/netG.pth or Model/netG_epoch_N.pth "
                "of a training run, or pass the netG file itself)"
            )
    roots = [model_dir, model_dir.parent]
    text = Path(text_encoder) if text_encoder is not None else _first(
        [model_dir / "text_encoder.pth", *(_latest(r, "text_encoder*.pth") for r in roots)]
    )  # fmt: skip
    if text is None:
        raise FileNotFoundError(
            f"no text encoder found beside {netG}: pass --text-encoder text_encoderN.pth"
        )
    voc = Path(vocab) if vocab is not None else _first(
        [r / name for r in roots for name in ("vocab.json", "captions.pickle")]
    )  # fmt: skip
    if voc is None:
        raise FileNotFoundError(
            f"no vocabulary found beside {netG}: pass --vocab vocab.json (written by training) "
            "or the dataset's captions.pickle"
        )
    legacy = False
    run_json = model_dir.parent / "run.json"
    if run_json.is_file():
        info = read_json(run_json, "run.json (written by training) records the run's options")
        legacy = bool(info.get("legacy_mask", False)) if isinstance(info, dict) else False
    return GenerationFiles(netG, text, voc, legacy)


def load_vocabulary(path: str | Path) -> Vocabulary:
    """A vocabulary from ``vocab.json`` (training runs) or a ``captions.pickle`` (datasets)."""
    path = Path(path)
    if path.suffix == ".json":
        return load_vocab(path)
    return load_captions_pickle(path).vocab


def generate_from_checkpoint(
    checkpoint: str | Path,
    captions: Sequence[str],
    out_dir: str | Path,
    n_samples: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    text_encoder: str | Path | None = None,
    vocab: str | Path | None = None,
    attention: bool = True,
) -> list[Path]:
    """``generate`` with the models found by ``resolve_generation_files`` (the CLI's command)."""
    files = resolve_generation_files(checkpoint, text_encoder, vocab)
    models = load_generation_models(
        files.netG, files.text_encoder, load_vocabulary(files.vocab), device, files.legacy_mask
    )
    return generate(models, captions, out_dir, n_samples, seed, attention)
