"""``attngan-fast serve``: DrawingBot, the page and HTTP API on a trained generator.

    attngan-fast serve runs/demo/gan                     # http://127.0.0.1:8000/
    attngan-fast serve --checkpoint netG_epoch_600.pth --text-encoder text_encoder200.pth \\
        --vocab captions.pickle --legacy-mask --port 8080

Needs the ``serve`` extra (``pip install "attngan-fast[serve]"``): FastAPI and uvicorn are
imported only when the server starts, so ``--help`` works without them.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

PROG = "attngan-fast serve"
MISSING_EXTRA = (
    f"{PROG}: the web server needs the serve extra ({{name}} is not installed): "
    'pip install "attngan-fast[serve]"'
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a trained generator: a page at / (type a caption, see every stage "
        "and each word's attention) and a JSON API (POST /api/generate, GET /api/health). "
        "Binds 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument(
        "run_dir", nargs="?", metavar="RUN_DIR", help="output folder of `attngan-fast train`"
    )
    parser.add_argument(
        "--checkpoint", metavar="PATH", help="a run folder or a netG file (instead of RUN_DIR)"
    )
    parser.add_argument("--text-encoder", metavar="FILE", help="text_encoder*.pth (override)")
    parser.add_argument("--vocab", metavar="FILE", help="vocab.json or captions.pickle (override)")
    parser.add_argument(
        "--legacy-mask", action="store_true", help="the original checkpoints' mask bug"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    parser.add_argument(
        "--max-n", type=int, default=8, help="images per request, at most (default: %(default)s)"
    )
    parser.add_argument(
        "--max-pending",
        type=int,
        default=4,
        help="requests running or waiting at once; more are refused with 503 (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--max-words", type=int, help="caption words, at most (default: the run's TEXT.WORDS_NUM)"
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if bool(args.run_dir) == bool(args.checkpoint):
        parser.error("give RUN_DIR or --checkpoint (one of them)")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, got {args.port}")
    for name in ("max_n", "max_pending", "max_words"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``attngan-fast serve``; returns the exit status (2: usage, files, extra)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        import uvicorn

        from attngan_fast.serve.app import create_app
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("fastapi", "uvicorn", "starlette", "pydantic"):
            print(MISSING_EXTRA.format(name=exc.name.split(".")[0]), file=sys.stderr)
            return 2
        raise
    from attngan_fast.serve.engine import DrawingEngine

    try:
        engine = DrawingEngine.from_checkpoint(
            args.run_dir or args.checkpoint, args.text_encoder, args.vocab, args.device,
            max_n=args.max_n, max_pending=args.max_pending, max_words=args.max_words,
            legacy_mask=args.legacy_mask,
        )  # fmt: skip
        engine.warm_up()
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    info = engine.info()
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"DrawingBot: http://{host}:{args.port}/ (model {info['model']['name']}, "
        f"{len(info['model']['stages'])} stages, device {info['device']}); Ctrl+C stops it",
        flush=True,
    )
    if not _loopback(args.host):
        print(f"{PROG}: listening on {args.host}: other machines can reach it", file=sys.stderr)
    uvicorn.run(create_app(engine), host=args.host, port=args.port, log_level="info")
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
