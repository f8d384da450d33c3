"""``attngan-fast experiment``: the talk's two experiments as one command each.

    attngan-fast experiment lambda --out runs/experiments            # AttnGAN1, lambda 0 .. 10
    attngan-fast experiment baselines --out runs/experiments         # AttnGAN2/1, StackGAN-v2,
                                                                     # GAN-INT-CLS
    attngan-fast experiment lambda --data data/birds --text-encoder DAMSMencoders/bird/... \\
        --size gpu --budget 20000 --inception-weights inception_v3.pth

Run again with the same ``--out`` to continue a sweep that was stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from attngan_fast.argtypes import SEED, device_name, int_in
from attngan_fast.experiment.settings import SIZES, SWEEPS
from attngan_fast.experiment.sweep import SweepOptions, run_sweep

PROG = "attngan-fast experiment"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train each setting of an experiment with the same budget and seed, "
        "evaluate it (R-precision; SynthBirds attribute accuracy; IS / FID with "
        "--inception-weights) and write one table (<out>/<experiment>.md and .json) and one "
        "plot (.png, needs matplotlib). Resumable: run it again with the same --out.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="experiments:\n"
        + "\n".join(f"  {k}: {', '.join(s.name for s in v)}" for k, v in SWEEPS.items()),
    )
    parser.add_argument("experiment", choices=list(SWEEPS), help="which table to make")
    parser.add_argument("--out", default="runs/experiments", metavar="DIR", help="output folder")
    parser.add_argument(
        "--data", metavar="DIR", help="dataset (default: SynthBirds made under --out)"
    )
    parser.add_argument("--layout", default="auto", choices=["auto", "cub", "coco", "folder"])
    parser.add_argument(
        "--text-encoder",
        metavar="FILE",
        help="pretrained DAMSM text_encoder<E>.pth (default: pretrained under --out)",
    )
    parser.add_argument("--image-encoder", metavar="FILE", help="its image_encoder<E>.pth")
    parser.add_argument(
        "--size", default="cpu", choices=list(SIZES), help="sizes of data, networks, evaluation"
    )
    parser.add_argument(
        "--budget",
        type=int_in(1),
        metavar="STEPS",
        help="training steps per setting (default: the size's, "
        + ", ".join(f"{k} {v.budget}" for k, v in SIZES.items())
        + ")",
    )
    parser.add_argument("--seed", type=SEED, default=0, help="the same seed for every setting")
    parser.add_argument("--device", type=device_name, help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads",
        type=int_in(1, 1024),
        help="CPU threads of torch (on a shared CPU 1 is often fastest)",
    )
    parser.add_argument(
        "--inception-weights", metavar="FILE", help="Inception-v3 state dict: adds IS and FID"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SETTING",
        help="run only this setting (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attngan-fast experiment``; errors are handled by the main command."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run_sweep(
        args.experiment,
        SweepOptions(
            out_dir=args.out, data_dir=args.data, layout=args.layout,
            text_encoder=args.text_encoder, image_encoder=args.image_encoder, size=args.size,
            budget=args.budget, seed=args.seed, device=args.device,
            inception_weights=args.inception_weights, only=args.only,
            progress=not args.no_progress,
        ),
    )  # fmt: skip
    print(result.table_md.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
