"""``attngan-fast eval``: score a trained generator (R-precision, attribute accuracy, IS / FID).

    attngan-fast eval r-precision --checkpoint runs/attngan --n-images 30000
    attngan-fast eval attributes --checkpoint runs/demo/gan --data data/synth_birds
    attngan-fast eval inception --checkpoint runs/attngan --inception-weights inception_v3.pth
    attngan-fast eval tsne --checkpoint runs/demo/gan --out tsne.png   # the talk's t-SNE figure

``--checkpoint`` is a training run's folder (or its netG file); the dataset, config and DAMSM
encoders it was trained with are read from its ``run.json`` / ``config.yml`` unless given. Results
are printed and, with ``--json FILE``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

PROG = "attngan-fast eval"


def _run_info(checkpoint: Path) -> dict[str, Any]:
    """``run.json`` of the training run that ``checkpoint`` (folder or file) belongs to, or {}."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for candidate in (folder / "run.json", folder.parent / "run.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    return {}


def _recorded_path(value: str, checkpoint: Path) -> Path:
    """A path from run.json: as written, else relative to a folder above the run (run.json
    keeps paths as given on the command line, relative to where training was started)."""
    path = Path(value)
    if path.exists() or path.is_absolute():
        return path
    for folder in checkpoint.resolve().parents:
        if (folder / path).exists():
            return folder / path
    return path


def _data_dir(args: argparse.Namespace, info: dict[str, Any]) -> Path:
    if args.data:
        return Path(args.data)
    if not info.get("data_dir"):
        raise SystemExit(f"{PROG}: no dataset: pass --data DIR (the run.json does not name one)")
    return _recorded_path(info["data_dir"], Path(args.checkpoint))


def _config(checkpoint: Path):  # -> Config
    from attngan_fast.config import load_config, preset

    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for candidate in (folder / "config.yml", folder.parent / "config.yml"):
        if candidate.is_file():
            return load_config(candidate)
    return preset("birds")


def _models(args: argparse.Namespace, device: str):
    from attngan_fast.runtime.generation import load_generation_models
    from attngan_fast.runtime.run_dir import load_vocabulary, resolve_generation_files

    files = resolve_generation_files(args.checkpoint, args.text_encoder, args.vocab)
    vocab = load_vocabulary(files.vocab)
    return load_generation_models(
        files.netG, files.text_encoder, vocab, device, files.legacy_mask
    ), files


def _image_encoder(args: argparse.Namespace, info: dict[str, Any], text_state: dict) -> nn.Module:
    from attngan_fast.runtime.networks import EncoderSpec, image_encoder_path, load_image_encoder

    path = args.image_encoder or info.get("image_encoder")
    if not path and info.get("text_encoder"):
        path = image_encoder_path(info["text_encoder"])
    if path and not args.image_encoder:
        path = _recorded_path(str(path), Path(args.checkpoint))
    if not path or not Path(path).is_file():
        raise SystemExit(
            f"{PROG}: no DAMSM image encoder found ({path or 'run.json names none'}): pass "
            "--image-encoder image_encoderN.pth"
        )
    spec_dict = info.get("encoder_spec")
    spec = EncoderSpec(**spec_dict) if spec_dict else None
    return load_image_encoder(path, spec, text_state)


def _device(args: argparse.Namespace) -> str:
    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _report(args: argparse.Namespace, record: dict[str, Any]) -> None:
    print(json.dumps(record, indent=2))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def cmd_r_precision(args: argparse.Namespace) -> None:
    from attngan_fast.eval.r_precision import evaluate_r_precision
    from attngan_fast.runtime.generation import batch_generate_fn
    from attngan_fast.runtime.loaders import load_dataset

    device = _device(args)
    models, files = _models(args, device)
    info = _run_info(Path(args.checkpoint))
    encoder = _image_encoder(args, info, models.text_encoder.state_dict()).to(device)
    data = _data_dir(args, info)
    dataset = load_dataset(data, _config(Path(args.checkpoint)), args.split, args.layout, False)
    result = evaluate_r_precision(
        batch_generate_fn(models, args.seed), encoder, models.text_encoder, dataset.captions,
        dataset.class_ids, dataset.captions_per_image, args.n_images, args.candidates,
        args.folds, args.batch_size, args.seed,
    )  # fmt: skip
    _report(
        args,
        {
            "r_precision_mean": result.mean,
            "r_precision_std": result.std,
            "folds": result.folds,
            "n_images": len(result.hits),
            "candidates": args.candidates,
            "netG": str(files.netG),
            "data": str(data),
            "split": args.split,
        },
    )


def cmd_attributes(args: argparse.Namespace) -> None:
    from attngan_fast.eval.attribute_accuracy import evaluate_synth_birds
    from attngan_fast.runtime.generation import batch_generate_fn

    device = _device(args)
    models, files = _models(args, device)
    data = _data_dir(args, _run_info(Path(args.checkpoint)))
    result = evaluate_synth_birds(
        data, batch_generate_fn(models, args.seed), args.classifier, args.split,
        args.per_image, args.batch_size, steps=args.classifier_steps, device=device,
    )  # fmt: skip
    _report(
        args,
        {
            "attribute_accuracy": result.score.accuracy,
            "per_part": result.score.per_part,
            "named_colours": result.score.named,
            "chance": 0.1,
            "classifier_held_out_accuracy": result.classifier.held_out_accuracy,
            "classifier_held_out_per_part": result.classifier.held_out_per_part,
            "netG": str(files.netG),
            "data": str(data),
        },
    )


def _generated_batches(
    generate_fn, captions: Sequence[Sequence[int]], chosen: Sequence[int], batch_size: int
) -> Iterator[Tensor]:
    from attngan_fast.eval.r_precision import pad_captions

    for start in range(0, len(chosen), batch_size):
        yield generate_fn(*pad_captions([captions[i] for i in chosen[start : start + batch_size]]))


def _real_batches(dataset, batch_size: int, limit: int) -> Iterator[Tensor]:
    for start in range(0, min(limit, len(dataset)), batch_size):
        stop = min(start + batch_size, limit, len(dataset))
        yield torch.stack([dataset[i].images[-1] for i in range(start, stop)])


def cmd_inception(args: argparse.Namespace) -> None:
    from attngan_fast.eval.inception_metrics import inception_metrics, load_inception
    from attngan_fast.eval.r_precision import caption_choice
    from attngan_fast.runtime.generation import batch_generate_fn
    from attngan_fast.runtime.loaders import load_dataset

    device = _device(args)
    inception = load_inception(args.inception_weights, device)
    models, files = _models(args, device)
    data = _data_dir(args, _run_info(Path(args.checkpoint)))
    dataset = load_dataset(data, _config(Path(args.checkpoint)), args.split, args.layout, False)
    n_images = args.n_images or len(dataset)
    chosen = caption_choice(n_images, len(dataset), dataset.captions_per_image, args.seed)
    fakes = _generated_batches(
        batch_generate_fn(models, args.seed), dataset.captions, chosen.tolist(), args.batch_size
    )
    reals = None if args.no_fid else _real_batches(dataset, args.batch_size, n_images)
    result = inception_metrics(inception, fakes, reals, args.splits)
    _report(
        args,
        {
            "inception_score_mean": result.inception_score.mean,
            "inception_score_std": result.inception_score.std,
            "fid": result.fid,
            "n_images": n_images,
            "netG": str(files.netG),
            "data": str(data),
        },
    )


def _tsne_captions(args: argparse.Namespace, data: Path) -> tuple[list, list, list | None]:
    """(captions as word indices, chosen indices, the named colour of ``args.attribute`` per
    chosen caption or None when the dataset is not SynthBirds)."""
    from attngan_fast.data.synth_birds import ATTRIBUTES_FILE, PALETTE, PARTS
    from attngan_fast.eval.attribute_accuracy import load_caption_targets
    from attngan_fast.eval.r_precision import caption_choice
    from attngan_fast.runtime.loaders import load_dataset

    dataset = load_dataset(data, _config(Path(args.checkpoint)), args.split, args.layout, False)
    chosen = caption_choice(args.n_images, len(dataset), dataset.captions_per_image, args.seed)
    if not (data / ATTRIBUTES_FILE).is_file():
        return dataset.captions, chosen.tolist(), None
    targets = load_caption_targets(data, args.split).targets[:, PARTS.index(args.attribute)]
    if len(targets) != len(dataset.captions):
        raise ValueError(f"{data}: attributes.json does not match the {args.split} captions")
    names = [PALETTE[t] if t >= 0 else None for t in targets[chosen].tolist()]
    return dataset.captions, chosen.tolist(), names


def _tsne_embedder(
    args: argparse.Namespace, info: dict[str, Any], models, device: str
) -> Callable[[Tensor], Tensor]:
    """images B x 3 x H x W in [-1, 1] -> features B x D (float32, CPU), as --features says."""
    if args.features == "inception":
        from attngan_fast.eval.inception_metrics import inception_outputs, load_inception

        inception = load_inception(args.inception_weights, device)
        return lambda images: inception_outputs(inception, [images]).pool3
    from attngan_fast.eval.r_precision import encode_images

    encoder = _image_encoder(args, info, models.text_encoder.state_dict()).to(device)
    return lambda images: encode_images(encoder, [images])


def cmd_tsne(args: argparse.Namespace) -> None:
    from attngan_fast.data.synth_birds import COLOURS
    from attngan_fast.eval import tsne
    from attngan_fast.runtime.generation import batch_generate_fn

    for module in ("sklearn.manifold", "scipy.optimize", "matplotlib.figure"):
        try:
            tsne.require(module)
        except tsne.MissingExtraError as exc:
            print(f"{PROG} tsne: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    if args.n_images < 4 or args.n_images > tsne.MAX_GRID_IMAGES:
        raise ValueError(f"--n-images must be 4..{tsne.MAX_GRID_IMAGES}, got {args.n_images}")
    if args.thumb < 8:
        raise ValueError(f"--thumb must be >= 8 pixels, got {args.thumb}")
    device = _device(args)
    models, files = _models(args, device)
    info = _run_info(Path(args.checkpoint))
    embed = _tsne_embedder(args, info, models, device)
    data = _data_dir(args, info)
    captions, chosen, names = _tsne_captions(args, data)
    features, thumbs = [], []
    with torch.no_grad():
        for images in _generated_batches(
            batch_generate_fn(models, args.seed), captions, chosen, args.batch_size
        ):
            features.append(embed(images))
            thumbs.append(tsne.thumbnails(images, args.thumb))
    xy, kl = tsne.tsne_2d(torch.cat(features), args.perplexity, args.seed)
    cols, rows = tsne.grid_shape(len(xy))
    grid = tsne.thumbnail_grid(torch.cat(thumbs), tsne.grid_cells(xy, cols, rows), cols, rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out, format="PNG")
    record = {
        "grid_png": str(out), "grid": [cols, rows], "thumb": args.thumb,
        "n_images": len(xy), "features": args.features, "kl_divergence": kl,
        "netG": str(files.netG), "data": str(data), "split": args.split,
    }  # fmt: skip
    if names is not None:
        plot = out.with_name(f"{out.stem}_{args.attribute}{out.suffix}")
        title = f"t-SNE of {len(xy)} generated images: {args.attribute} colour named in the caption"
        tsne.attribute_scatter(xy, names, COLOURS, title).savefig(plot, format="png")
        record["attribute_png"] = str(plot)
        record["attribute"] = args.attribute
    _report(args, record)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score a trained generator. --checkpoint is the output folder of "
        "`attngan-fast train` (or a netG file with --text-encoder and --vocab).",
    )
    sub = parser.add_subparsers(dest="metric", required=True, metavar="METRIC")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--checkpoint", required=True, metavar="DIR", help="training run folder")
        p.add_argument("--text-encoder", metavar="FILE", help="text_encoder*.pth (override)")
        p.add_argument("--vocab", metavar="FILE", help="vocab.json or captions.pickle (override)")
        p.add_argument("--data", metavar="DIR", help="dataset folder (default: the run's)")
        p.add_argument("--split", default="test", choices=["train", "test"])
        p.add_argument("--layout", default="auto", choices=["auto", "cub", "coco", "folder"])
        p.add_argument("--batch-size", type=int, default=50)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
        p.add_argument("--json", metavar="FILE", help="also write the result here")

    p = sub.add_parser(
        "r-precision",
        help="DM-GAN's R-precision: true caption vs 99 of other classes, DAMSM encoders",
    )
    common(p)
    p.add_argument("--image-encoder", metavar="FILE", help="DAMSM image_encoder*.pth")
    p.add_argument("--n-images", type=int, help="images to generate (DM-GAN: 30000)")
    p.add_argument("--candidates", type=int, default=100, help="captions ranked per image")
    p.add_argument("--folds", type=int, default=10)
    p.set_defaults(func=cmd_r_precision)

    p = sub.add_parser(
        "attributes", help="SynthBirds: share of caption colours shown on the right part"
    )
    common(p)
    p.add_argument(
        "--classifier", metavar="FILE", help="part-colour classifier to load, or to train and save"
    )
    p.add_argument("--per-image", type=int, default=1, help="captions scored per test image")
    p.add_argument(
        "--classifier-steps", type=int, default=1000, help="classifier training batches (of 32)"
    )
    p.set_defaults(func=cmd_attributes)

    p = sub.add_parser("inception", help="Inception score and FID (local weights file)")
    common(p)
    p.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="Inception-v3 state dict (torchvision layer names); nothing is downloaded",
    )
    p.add_argument("--n-images", type=int, help="images to generate (default: one per item)")
    p.add_argument("--splits", type=int, default=10, help="IS splits")
    p.add_argument("--no-fid", action="store_true", help="Inception score only")
    p.set_defaults(func=cmd_inception)

    from attngan_fast.data.synth_birds import PARTS

    p = sub.add_parser(
        "tsne",
        help="the talk's figure: generated images on a grid by t-SNE of their features "
        "(tsne extra)",
        description="Generate --n-images images from the split's captions, embed them (DAMSM "
        "image encoder or Inception pool3), map them to 2-D with t-SNE and place each "
        "thumbnail on the grid cell nearest its position (--out). On SynthBirds, also plot the "
        "points coloured by the colour the caption names for --attribute (<out>_<part>.png).",
    )
    common(p)
    p.add_argument(
        "--out",
        default="tsne.png",
        metavar="FILE.png",
        help="the grid figure (default: %(default)s)",
    )
    p.add_argument(
        "--n-images",
        type=int,
        default=400,
        help="images to generate and place (default: %(default)s)",
    )
    p.add_argument(
        "--thumb", type=int, default=64, help="thumbnail side in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--perplexity", type=float, default=30.0, help="t-SNE perplexity (default: %(default)s)"
    )
    p.add_argument(
        "--features", default="image-encoder", choices=["image-encoder", "inception"],
        help="DAMSM image encoder's global code, or Inception-v3 pool3 (--inception-weights)",
    )  # fmt: skip
    p.add_argument("--image-encoder", metavar="FILE", help="DAMSM image_encoder*.pth")
    p.add_argument("--inception-weights", metavar="FILE", help="Inception-v3 state dict")
    p.add_argument(
        "--attribute", default="body", choices=PARTS,
        help="SynthBirds: colour the points by the colour the caption names for this part "
        "(default: %(default)s)",
    )  # fmt: skip
    p.set_defaults(func=cmd_tsne)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attngan-fast eval``; returns the exit status (2 for a usage problem:
    a missing file, or a value the data cannot satisfy)."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"{PROG} {args.metric}: {exc}", file=sys.stderr)
        return 2
    return 0
