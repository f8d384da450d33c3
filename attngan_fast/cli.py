"""``attngan-fast``: the command line of attngan-fast (one command, one subcommand per job).

    attngan-fast demo                          # try everything on generated data (CPU: ~13 min)
    attngan-fast synth-data data/synth_birds   # make the SynthBirds dataset (CUB layout)
    attngan-fast pretrain-damsm --data data/birds --image-encoder small
    attngan-fast train --data data/birds --text-encoder runs/damsm/text_encoder599.pth
    attngan-fast generate --checkpoint runs/attngan "this bird has a red belly and black wings"
    attngan-fast eval ...                      # R-precision, attribute accuracy, IS / FID, t-SNE
    attngan-fast serve runs/demo/gan           # DrawingBot: web page + HTTP API (serve extra)
    attngan-fast bench ...                     # speed measurements (attngan_fast.bench)
    attngan-fast experiment lambda|baselines   # the talk's tables, trained and evaluated here
    attngan-fast env                           # versions, _C, GPUs: for a bug report

Configuration: a preset (``--preset birds``), or ``--cfg file.yml`` in the original AttnGAN format,
then ``--set KEY=VALUE`` (original key names, e.g. ``--set TRAIN.SMOOTH.LAMBDA=5``) and the
dedicated flags, which win.
Multi-GPU: ``torchrun --nproc_per_node N -m attngan_fast.cli train ...``.

Errors: every value is checked while the command line is parsed; a problem is one line on
stderr (what is wrong, which flag or file, what to do), exit status 2 for a usage error (a bad
flag, a missing input file, an output folder in use) and 1 for a failure while running (a damaged
file, a diverged run). ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from attngan_fast.argtypes import SEED, device_name, float_in, int_in
from attngan_fast.config import PRESET_HELP
from attngan_fast.errors import AttnGanError, UsageError

PROG = "attngan-fast"
DEBUG_FLAG = "--debug"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` where a default means something (not None, False or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


DELEGATED = {
    "eval": "attngan_fast.eval.cli",
    "bench": "attngan_fast.bench.cli",
    "serve": "attngan_fast.serve.cli",
    "experiment": "attngan_fast.experiment.cli",
    "env": "attngan_fast.env_report",
}
# SynthBirds bounds (make_synth_birds checks the same): images per split and their side in pixels.
MAX_IMAGES, MIN_SIZE, MAX_SIZE = 100_000, 32, 1024


def _add_config_args(p: argparse.ArgumentParser, default_preset: str) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--preset",
        default=default_preset,
        choices=list(PRESET_HELP),
        metavar="NAME",
        help="start from this configuration: "
        + "; ".join(f"{name}: {what}" for name, what in PRESET_HELP.items()),
    )
    g.add_argument(
        "--cfg",
        metavar="FILE.yml",
        help="an original-format AttnGAN yml file (replaces --preset); flags override it",
    )
    g.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value by its original name, e.g. --set GAN.GF_DIM=16 "
        "(repeatable)",
    )


def _add_run_args(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: DATA_DIR of the config)")
    p.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "cub", "coco", "folder"],
        help="dataset layout: CUB birds (also SynthBirds), COCO, or a folder of images with a "
        ".txt of captions beside each; auto recognises them",
    )
    p.add_argument("--out", default=out_default, metavar="DIR", help="output folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="--out holds an earlier run: delete its files (only those) and start again",
    )
    p.add_argument("--epochs", type=int_in(1), help="epochs (default: TRAIN.MAX_EPOCH)")
    p.add_argument("--steps", type=int_in(1), help="stop after this many steps (iterations)")
    p.add_argument(
        "--batch-size", type=int_in(1, 65536), help="per-process batch size (TRAIN.BATCH_SIZE)"
    )
    p.add_argument(
        "--device", type=device_name, help="cpu, cuda or cuda:N (default: the GPU if there is one)"
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="fp32, or autocast mixed precision (fp16 uses a gradient scaler; GPU only); auto: "
        "bf16 where the GPU or CPU computes bf16 natively (AVX-512 BF16 / AMX), else fp32",
    )
    p.add_argument(
        "--workers",
        type=int_in(0, 256),
        help="data loading processes (default: WORKERS of the config; 0 makes --resume bit for "
        "bit)",
    )
    p.add_argument("--seed", type=SEED, default=100, help="random seed (same seed, same run)")
    p.add_argument(
        "--original-damsm-loop",
        action="store_true",
        help="compute the DAMSM loss with the original per-caption Python loop (slow baseline)",
    )
    p.add_argument("--log-every", type=int_in(1), default=10, help="steps between metrics records")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="AttnGAN text-to-image training and generation, with fused kernels.\n\n"
        "New here? Run `attngan-fast demo`: it makes a small synthetic bird dataset, trains "
        "the\ntext/image encoders and a small AttnGAN, and writes pictures under runs/demo.\n"
        "`attngan-fast COMMAND --help` explains each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="show the full traceback of an error (also accepted after the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "synth-data",
        help="make the SynthBirds dataset (offline, CUB layout)",
        description="Draw SynthBirds: stylised birds whose part colours follow ten CUB-style "
        "captions each, written in the CUB layout (train and test splits, attributes.json). "
        "Deterministic from --seed.",
        formatter_class=_Formatter,
    )
    p.add_argument("out", metavar="DIR", help="output folder (plays the part of CUB's birds/)")
    p.add_argument("--train", type=int_in(1, MAX_IMAGES), default=2000, help="training images")
    p.add_argument("--test", type=int_in(0, MAX_IMAGES), default=500, help="test images")
    p.add_argument(
        "--size", type=int_in(MIN_SIZE, MAX_SIZE), default=256, help="image side in pixels"
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a SynthBirds made here before (only the files it wrote are deleted; a "
        "folder it did not make is refused)",
    )
    p.set_defaults(func=_cmd_synth_data)

    p = sub.add_parser(
        "pretrain-damsm",
        help="pretrain the DAMSM text and image encoders",
        description="Train the text encoder (bidirectional LSTM) and the image encoder on the "
        "DAMSM loss, as the original pretrain_DAMSM.py. Writes text_encoder<E>.pth and "
        "image_encoder<E>.pth (original format) under --out; pass the text encoder to `train`. "
        "After every epoch, text-image retrieval on the test split (R@1, R-precision) is logged "
        "and the best epoch is kept as text_encoder_best.pth (best_encoders.json says which).",
        formatter_class=_Formatter,
    )
    _add_config_args(p, "damsm_birds")
    _add_run_args(p, "runs/damsm")
    p.add_argument(
        "--image-encoder",
        default="inception",
        choices=["inception", "small"],
        help="inception: the original Inception-v3 encoder (needs --inception-weights); small: "
        "a light CNN trained from scratch (no download, good for small images)",
    )
    p.add_argument(
        "--inception-weights",
        metavar="FILE",
        help="torchvision inception_v3 ImageNet state dict (local file; nothing is downloaded)",
    )
    p.add_argument(
        "--small-size",
        type=int_in(16, 1024, multiple_of=16),
        default=64,
        help="input size of the small encoder",
    )
    p.add_argument(
        "--small-ndf", type=int_in(1, 1024), default=64, help="base channels of the small encoder"
    )
    p.add_argument(
        "--lr", type=float_in(0.0, low_open=True), help="encoder learning rate (TRAIN.ENCODER_LR)"
    )
    p.add_argument(
        "--no-test-eval",
        action="store_true",
        help="skip the retrieval scores on the test split after every epoch (and so the "
        "best encoders, text_encoder_best.pth / image_encoder_best.pth)",
    )
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "train",
        help="train AttnGAN (G, the Ds) with frozen DAMSM encoders",
        description="Train the AttnGAN generator and discriminators. Resumable (--resume), "
        "mixed precision (--precision), multi-GPU under torchrun. Writes checkpoint.pt, "
        "Model/netG.pth (EMA weights, original format), samples/*.png and metrics.jsonl "
        "under --out.",
        formatter_class=_Formatter,
    )
    _add_config_args(p, "birds")
    _add_run_args(p, "runs/attngan")
    p.add_argument(
        "--text-encoder",
        metavar="FILE",
        help="pretrained text_encoder<E>.pth (default TRAIN.NET_E); the image encoder is the "
        "image_encoder<E>.pth beside it unless --image-encoder is given",
    )
    p.add_argument("--image-encoder", metavar="FILE", help="pretrained image_encoder<E>.pth")
    p.add_argument("--branches", type=int_in(1, 3), help="generator stages, 1-3 (TREE.BRANCH_NUM)")
    p.add_argument("--ngf", type=int_in(1, 1024), help="generator width (GAN.GF_DIM)")
    p.add_argument("--ndf", type=int_in(1, 1024), help="discriminator width (GAN.DF_DIM)")
    p.add_argument("--lr", type=float_in(0.0, low_open=True), help="G and D learning rate")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint.pt (same model options; a new "
        "--lr, --ema-decay, --steps ... applies from there and is printed)",
    )
    p.add_argument(
        "--checkpoint-every", type=int_in(1), default=1000, help="steps between checkpoints"
    )
    p.add_argument(
        "--sample-every",
        type=int_in(0),
        default=500,
        help="steps between sample grids (0: none)",
    )
    p.add_argument(
        "--sample-caption",
        dest="sample_captions",
        action="append",
        default=[],
        metavar="TEXT",
        help="caption for the sample grids (repeatable; default: a few from the dataset)",
    )
    p.add_argument(
        "--ema-decay",
        type=float_in(0.0, 1.0, high_open=True),
        default=0.999,
        help="G's weight averaging, in [0, 1)",
    )
    p.add_argument(
        "--augment",
        choices=["full", "crop", "none"],
        default="full",
        help="training images: full = the original's random crop and left-right mirror; crop = "
        "the crop only (birds all facing one way); none = the centre crop",
    )
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm in the Ds (multi-GPU)")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels-last memory format for the image networks (default: on for bf16 on a "
        "CPU, where it is 1.7x faster; off elsewhere)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile G, the Ds and the image encoder (the first step compiles; its time "
        "is printed)",
    )
    p.add_argument(
        "--legacy-mask",
        action="store_true",
        help="the original's misaligned attention mask (issue #93), for its checkpoints",
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "generate",
        help="images (every stage) and attention figures from captions",
        description="Generate images from captions with a trained generator. Give a training "
        "output folder (--checkpoint), or the original files: --netG, --text-encoder and "
        "--captions-pickle (the dataset's captions.pickle, for the vocabulary).",
        formatter_class=_Formatter,
    )
    p.add_argument("captions", nargs="+", metavar="CAPTION", help="captions, each in quotes")
    p.add_argument("--checkpoint", metavar="DIR", help="output folder of `attngan-fast train`")
    p.add_argument("--netG", metavar="FILE", help="generator state dict (netG_epoch_*.pth)")
    p.add_argument("--text-encoder", metavar="FILE", help="text_encoder*.pth")
    p.add_argument("--vocab", metavar="FILE", help="vocab.json written by training")
    p.add_argument("--captions-pickle", metavar="FILE", help="captions.pickle of the dataset")
    p.add_argument("--out", default="generated", metavar="DIR", help="output folder")
    p.add_argument("--samples", type=int_in(1, 1000), default=1, help="images per caption")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N")
    p.add_argument("--no-attention", action="store_true", help="skip the attention figures")
    p.add_argument(
        "--same-noise",
        action="store_true",
        help="the same z for every caption (seed --seed), so captions that differ in one word "
        "show what that word changes; default: caption i gets seed --seed + i",
    )
    p.add_argument("--legacy-mask", action="store_true", help="original checkpoints' mask bug")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "demo",
        help="SynthBirds -> DAMSM -> small AttnGAN -> pictures, in one go",
        description="Make SynthBirds, pretrain DAMSM (small image encoder), train a small "
        "AttnGAN, write sample grids, colours.png (one row per caption, one colour word "
        "changed each time) and attention figures, and score the run (attribute accuracy, "
        "R-precision). Under 15 minutes on a 2-core CPU; larger sizes on a GPU.",
        formatter_class=_Formatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder")
    p.add_argument(
        "--size",
        choices=["cpu", "gpu", "quick", "tiny"],
        help="sizes of the run (default: gpu when CUDA is available, else cpu)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="same as --size quick (about 2 minutes on 2 cores; pictures and scores)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="same as --size tiny (seconds; a smoke test)"
    )
    p.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    # Their options belong to their own modules (main(argv)); ``main`` hands them the arguments.
    sub.add_parser(
        "eval",
        help="evaluate a generator: R-precision, attribute accuracy (SynthBirds), IS and FID",
        add_help=False,
    )
    sub.add_parser(
        "bench", help="measure speed: ops, a training iteration, original vs fused", add_help=False
    )
    sub.add_parser("serve", help="DrawingBot: web page and HTTP API (serve extra)", add_help=False)
    sub.add_parser(
        "experiment",
        help="the talk's tables: lambda sweep, AttnGAN vs StackGAN-v2 vs GAN-INT-CLS",
        add_help=False,
    )
    sub.add_parser("env", help="versions, _C, GPUs: what a bug report needs", add_help=False)
    return parser


# --- subcommands -------------------------------------------------------------------------------


def _cmd_synth_data(args: argparse.Namespace) -> int:
    from attngan_fast.data.synth_birds import make_synth_birds

    root = make_synth_birds(
        args.out, args.train, args.test, seed=args.seed, image_size=args.size,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(f"SynthBirds written to {root} ({args.train} train, {args.test} test images)")
    return 0


def _config(args: argparse.Namespace, **values: object):
    from attngan_fast.train.overrides import override, resolve_config

    cfg = resolve_config(args.preset, args.cfg, args.sets)
    return override(cfg, **values)


def _workers(args: argparse.Namespace, cfg) -> int:
    """--workers, else the config's WORKERS."""
    return args.workers if args.workers is not None else cfg.WORKERS


def _cmd_pretrain(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm

    cfg = _config(args, **{"TRAIN.BATCH_SIZE": args.batch_size, "TRAIN.ENCODER_LR": args.lr})
    text, image = pretrain_damsm(
        cfg,
        PretrainOptions(
            out_dir=args.out, data_dir=args.data or cfg.DATA_DIR or None, layout=args.layout,
            image_encoder=args.image_encoder, inception_weights=args.inception_weights,
            small_ndf=args.small_ndf, small_size=args.small_size, device=args.device,
            precision=args.precision, seed=args.seed, max_epochs=args.epochs,
            max_steps=args.steps, workers=_workers(args, cfg), log_every=args.log_every,
            original_damsm_loop=args.original_damsm_loop, progress=not args.no_progress,
            overwrite=args.overwrite, test_eval=not args.no_test_eval,
        ),
    )  # fmt: skip
    print(f"encoders: {text} and {image}")
    best = Path(args.out) / "best_encoders.json"
    if best.is_file():
        record = json.loads(best.read_text(encoding="utf-8"))
        rp = record["r_precision"]
        score = f"R-precision {rp:.1f} %" if rp is not None else "R@1 text->image"
        score += "" if rp is not None else f" {record['r1_text_to_image']:.1f} %"
        print(
            f"best on the test split: epoch {record['epoch']} (step {record['step']}), {score}: "
            f"{best.with_name('text_encoder_best.pth')}"
        )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from attngan_fast.train.gan_trainer import GanTrainOptions, train_gan

    cfg = _config(
        args,
        **{
            "TRAIN.BATCH_SIZE": args.batch_size, "TREE.BRANCH_NUM": args.branches,
            "GAN.GF_DIM": args.ngf, "GAN.DF_DIM": args.ndf,
            "TRAIN.GENERATOR_LR": args.lr, "TRAIN.DISCRIMINATOR_LR": args.lr,
        },
    )  # fmt: skip
    files = train_gan(
        cfg,
        GanTrainOptions(
            out_dir=args.out, data_dir=args.data or cfg.DATA_DIR or None, layout=args.layout,
            text_encoder=args.text_encoder, image_encoder=args.image_encoder,
            device=args.device, precision=args.precision, seed=args.seed,
            max_epochs=args.epochs, max_steps=args.steps, checkpoint_every=args.checkpoint_every,
            sample_every=args.sample_every, log_every=args.log_every,
            sample_captions=args.sample_captions, workers=_workers(args, cfg), resume=args.resume,
            sync_bn=args.sync_bn, channels_last=args.channels_last, compile=args.compile,
            original_damsm_loop=args.original_damsm_loop, legacy_mask=args.legacy_mask,
            ema_decay=args.ema_decay, augment=args.augment, progress=not args.no_progress,
            overwrite=args.overwrite,
        ),
    )  # fmt: skip
    print(f"done: generator (EMA weights) in {files.netG}, samples in {files.samples}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from attngan_fast.data.captions import load_captions_pickle
    from attngan_fast.generate import generate
    from attngan_fast.runtime.generation import load_generation_models
    from attngan_fast.runtime.run_dir import RunFiles, load_vocab, run_legacy_mask

    legacy_mask = args.legacy_mask
    if args.checkpoint:
        run = RunFiles(Path(args.checkpoint))
        netG = args.netG or run.netG
        text = args.text_encoder or run.text_encoder
        vocab_file = args.vocab or run.vocab
        vocab = load_vocab(vocab_file) if not args.captions_pickle else None
        legacy_mask = legacy_mask or run_legacy_mask(run)
    else:
        if not (args.netG and args.text_encoder and (args.vocab or args.captions_pickle)):
            raise UsageError(
                "give --checkpoint DIR, or --netG, --text-encoder and --vocab / --captions-pickle"
            )
        netG, text = args.netG, args.text_encoder
        vocab = load_vocab(args.vocab) if args.vocab else None
    if vocab is None:
        vocab = load_captions_pickle(Path(args.captions_pickle)).vocab
    device = args.device or ("cuda" if _cuda() else "cpu")
    models = load_generation_models(netG, text, vocab, device, legacy_mask=legacy_mask)
    written = generate(
        models, args.captions, args.out, n_samples=args.samples, seed=args.seed,
        attention=not args.no_attention, same_noise=args.same_noise,
    )  # fmt: skip
    print(f"{len(written)} images written under {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from attngan_fast.demo import closing_message, demo_settings, run_demo

    size = "tiny" if args.tiny else "quick" if args.quick else args.size
    outputs = run_demo(
        args.out, demo_settings(size), args.device, not args.no_progress, seed=args.seed
    )
    print((outputs["timings"]).read_text(), end="")
    if "attribute_accuracy" in outputs:
        import json

        record = json.loads(outputs["attribute_accuracy"].read_text())
        print(
            f"attribute accuracy (colours named in test captions shown on the right part): "
            f"{100 * record['attribute_accuracy']:.1f} % (chance 10 %; the classifier scores "
            f"{100 * record['classifier_held_out_accuracy']:.1f} % on real test images)"
        )
    if "r_precision" in outputs:
        import json

        record = json.loads(outputs["r_precision"].read_text())
        print(
            f"R-precision (true caption ranked first of 20 by the demo's DAMSM): "
            f"{record['r_precision_mean']:.1f} % (chance 5 %)"
        )
    print(closing_message(outputs), end="")
    return 0


def delegate(name: str, argv: Sequence[str]) -> int:
    """Run ``DELEGATED[name].main(argv)``.

    Every delegated module ships with the package, so a missing one means a broken installation
    (an AttnGanError saying so, exit status 1); a missing optional dependency inside it is that
    module's own error to explain.
    """
    module = DELEGATED[name]
    try:
        target = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise AttnGanError(
                f"this installation of attngan-fast is broken: {module} is missing; "
                "reinstall it (pip install --force-reinstall attngan-fast)"
            ) from None
        raise
    return int(target.main(list(argv)) or 0)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attngan-fast``; returns the exit status (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    where = f"{PROG} {argv[0]}" if argv and not argv[0].startswith("-") else PROG
    try:
        if argv and argv[0] in DELEGATED:
            return delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        if debug:
            raise
        code, message = describe_error(exc)
        # one write, newline included: the lines of several processes (torchrun) do not interleave
        sys.stderr.write(f"{where}: error: {message}\n")
        sys.stderr.flush()
        return code


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) of an error that stopped a command.

    The library's own errors (AttnGanError) carry their status; a missing or existing path is a
    usage error (2); anything else is a failure while running (1), and an exception that no
    check of this library raised says so and points at ``--debug``.
    """
    code, text = _classify(exc)
    return code, " ".join(text.split()) or type(exc).__name__


def _classify(exc: BaseException) -> tuple[int, str]:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, AttnGanError):
        return exc.exit_code, text
    registry = sys.modules.get("attngan_fast.ops.registry")
    if registry is not None and isinstance(exc, registry.BackendUnavailableError):
        return 2, f"{text} (set {registry.ENV_VAR} to another backend, or unset it)"
    if isinstance(exc, (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)):
        return 2, text
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return 1, f"out of memory ({text.splitlines()[0]}): try a smaller --batch-size"
    if isinstance(exc, (OSError, ValueError, KeyError)):
        return 1, text
    return 1, f"{type(exc).__name__}: {text} (unexpected; {DEBUG_FLAG} shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
