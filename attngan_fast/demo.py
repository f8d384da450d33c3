"""``attngan-fast demo``: SynthBirds -> DAMSM pretraining -> a small AttnGAN -> pictures.

Everything is made locally (no download). Under ``<out>`` (default ``runs/demo``):

    data/            SynthBirds in the CUB layout
    damsm/           text_encoder*.pth, image_encoder*.pth (small image encoder), metrics
    gan/             the GAN run (checkpoint, Model/netG.pth, samples/ grids, metrics.jsonl)
    colours.png      one row per caption that changes one colour word, same noise per column
    generated/       every stage's image and the word-attention figure of a few captions

Sizes are chosen for the machine: ``cpu`` (a 2-core CPU, under 15 minutes), ``gpu`` (larger: more
images, a wider network, longer training), ``quick`` (about 2 minutes on 2 cores: a smoke run
that still writes pictures and scores) and ``tiny`` (seconds, for tests). Running the demo
again in the same ``<out>`` keeps ``data/`` when it was made with the same SynthBirds settings
(``data/demo_data.json``; otherwise it is made again) and replaces the files of ``damsm/`` and
``gan/``.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from attngan_fast.config import config_from_dict, preset
from attngan_fast.data.synth_birds import VARIETIES, make_synth_birds
from attngan_fast.runtime.run_dir import load_vocab
from attngan_fast.train.gan_trainer import GanTrainOptions, train_gan
from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm
from attngan_fast.viz import save_image_grid

# Captions for the pictures: each changes one colour word, so the rows should differ in it.
COLOUR_CAPTIONS = (
    "this bird has a red body with blue wings and a red crown",
    "this bird has a blue body with blue wings and a blue crown",
    "this bird has a yellow body with black wings and a yellow crown",
    "this bird has a green body with green wings and a green crown",
    "this bird has a black body with white wings and a black crown",
    "this bird has a white body with grey wings and a white crown",
)
SAMPLE_CAPTIONS = (
    "this bird has a red body with blue wings and a red crown",
    "this bird has a yellow body with black wings and a yellow crown",
    "this bird has a blue body with green wings and a blue crown",
    "this bird has a white body with black wings and a white crown",
)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the three phases. Images: SynthBirds at ``image_size``; G makes 64 and 128 px."""

    n_train: int = 2000
    n_test: int = 200
    # SynthBirds variety (data.synth_birds.VARIETIES): "simple" (one large perched bird facing
    # right on a plain background) is what 2 CPU cores can learn in minutes; "full" on a GPU.
    variety: str = "simple"
    # The simple birds are all drawn alike (large, perched, facing right): the original's random
    # crop and mirror make G learn shifted and mirrored birds. In 1500 fp32 steps, attribute
    # accuracy full / crop / none: 35 / 46 / 51 % (benchmarks/NOTES.md, "The demo").
    augment: str = "none"
    image_size: int = 128
    embedding_dim: int = 64
    # 300 steps left the sentence loss near chance (real test images: R-precision ~24 %);
    # 3000-4000 reach ~50 % (benchmarks/NOTES.md, "The demo").
    damsm_steps: int = 3000
    damsm_batch: int = 32
    damsm_lr: float = 2e-3
    small_size: int = 64
    small_ndf: int = 16
    # bf16 on 2 cores (quiet machine): ~0.15 s a step with the data loading. One thread, no
    # augmentation: fp32 2500 steps 59 % / 76 %, bf16 1500: 42 % / 74 %, bf16 4000: 72 % / 76 %.
    gan_steps: int = 3500
    gan_batch: int = 16
    branches: int = 2
    ngf: int = 8
    ndf: int = 8
    r_num: int = 1
    # 8x the original 2e-4 (G and D): in 1500 steps 2e-4 / 4e-4 / 8e-4 / 1.6e-3 gave attribute
    # accuracy 24 / 30 / 34 / 35 % and R-precision 54 / 66 / 70 / 76 % (benchmarks/NOTES.md,
    # "The demo"). The gpu size keeps the original's 2e-4.
    lr: float = 1.6e-3
    lambda_: float = 5.0
    ema_decay: float = 0.99
    sample_every: int = 250
    # The GAN's precision: "auto" is bf16 on CPUs with AVX-512 BF16 / AMX (2.47x the fp32 step of
    # the library before its CPU path, 1.4x its fp32 step now; benchmarks/NOTES.md, "CPU path"),
    # fp32 elsewhere. At equal steps bf16 scored 7-9 points lower than fp32, at equal time higher.
    precision: str = "auto"
    # DAMSM pretraining stays fp32 on the CPU: bf16 saved ~10 % of its time there.
    damsm_precision: str = "fp32"
    channels_last: bool = True
    # The attribute classifier's training batches (1000: 96-98 % on held-out real images, the
    # eval CLI's default; fewer leave small parts near chance and the score untrustworthy).
    classifier_steps: int = 1000
    eval_captions_per_image: int = 2


SETTINGS = {
    "cpu": DemoSettings(),
    "gpu": DemoSettings(
        n_train=8000,
        n_test=500,
        variety="full",
        augment="full",
        image_size=256,
        embedding_dim=256,
        damsm_steps=2000,
        damsm_batch=48,
        small_ndf=64,
        gan_steps=12000,
        gan_batch=32,
        branches=3,
        ngf=32,
        ndf=64,
        r_num=2,
        lr=2e-4,
        ema_decay=0.999,
        sample_every=1000,
        precision="bf16",
        damsm_precision="bf16",
    ),  # fmt: skip
    "quick": DemoSettings(
        n_train=400,
        n_test=100,
        image_size=64,
        embedding_dim=32,
        damsm_steps=60,
        damsm_batch=32,
        small_ndf=8,
        gan_steps=80,
        gan_batch=16,
        sample_every=40,
        classifier_steps=300,
        eval_captions_per_image=1,
    ),  # fmt: skip
    "tiny": DemoSettings(
        n_train=48,
        n_test=8,
        classifier_steps=1,
        eval_captions_per_image=1,
        image_size=64,
        embedding_dim=32,
        damsm_steps=4,
        damsm_batch=8,
        small_size=32,
        small_ndf=4,
        gan_steps=3,
        gan_batch=4,
        ngf=2,
        ndf=2,
        sample_every=3,
    ),  # fmt: skip
}


DATA_STAMP = "demo_data.json"  # the SynthBirds settings data/ was made with


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def demo_settings(kind: str | None = None) -> DemoSettings:
    """The settings for ``kind`` (``cpu``, ``gpu``, ``quick``, ``tiny``); None picks gpu when CUDA
    is there, else cpu."""
    if kind is None:
        kind = "gpu" if torch.cuda.is_available() else "cpu"
    if kind not in SETTINGS:
        raise ValueError(f"demo size must be one of {', '.join(SETTINGS)}, got {kind!r}")
    return SETTINGS[kind]


def run_demo(
    out_dir: str | Path = "runs/demo",
    settings: DemoSettings | None = None,
    device: str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Path]:
    """Run the whole demo; returns the main outputs (also printed with the time each phase took)."""
    s = settings or demo_settings()
    out = Path(out_dir)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    data = out / "data"
    made_with = {"n_train": s.n_train, "n_test": s.n_test, "image_size": s.image_size,
                 "variety": s.variety, "seed": seed}  # fmt: skip
    stamp = data / DATA_STAMP
    if not (data / "attributes.json").is_file() or _read_stamp(stamp) != made_with:
        make_synth_birds(
            data, s.n_train, s.n_test, seed=seed, image_size=s.image_size,
            variety=VARIETIES[s.variety], overwrite=True,
        )  # fmt: skip
        stamp.write_text(json.dumps(made_with) + "\n", encoding="utf-8")
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    damsm_cfg = config_from_dict(
        {
            "TREE": {"BRANCH_NUM": 1, "BASE_SIZE": s.small_size},
            "TEXT": {"EMBEDDING_DIM": s.embedding_dim},
            "TRAIN": {
                "BATCH_SIZE": s.damsm_batch, "ENCODER_LR": s.damsm_lr,
                "MAX_EPOCH": 10_000, "SNAPSHOT_INTERVAL": 10_000,
            },
        },
        preset("damsm_birds"),
    )  # fmt: skip
    text_path, _ = pretrain_damsm(
        damsm_cfg,
        PretrainOptions(
            out_dir=out / "damsm", data_dir=data, image_encoder="small", small_ndf=s.small_ndf,
            small_size=s.small_size, device=device, precision=s.damsm_precision, seed=seed,
            max_steps=s.damsm_steps, progress=progress, log_every=10, overwrite=True,
        ),
    )  # fmt: skip
    timings["damsm"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    gan_cfg = config_from_dict(
        {
            "TREE": {"BRANCH_NUM": s.branches},
            "GAN": {"GF_DIM": s.ngf, "DF_DIM": s.ndf, "R_NUM": s.r_num},
            "TEXT": {"EMBEDDING_DIM": s.embedding_dim},
            "TRAIN": {
                "BATCH_SIZE": s.gan_batch, "GENERATOR_LR": s.lr, "DISCRIMINATOR_LR": s.lr,
                "MAX_EPOCH": 10_000, "SNAPSHOT_INTERVAL": 10_000,
                "SMOOTH": {"LAMBDA": s.lambda_},
            },
        },
        preset("birds"),
    )  # fmt: skip
    files = train_gan(
        gan_cfg,
        GanTrainOptions(
            out_dir=out / "gan", data_dir=data, text_encoder=text_path, device=device,
            precision=s.precision, seed=seed, max_steps=s.gan_steps,
            checkpoint_every=max(s.sample_every, 100), sample_every=s.sample_every,
            sample_captions=list(SAMPLE_CAPTIONS), ema_decay=s.ema_decay, progress=progress,
            channels_last=s.channels_last, augment=s.augment, overwrite=True,
        ),
    )  # fmt: skip
    timings["gan"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    outputs = write_pictures(files.root, out, device, seed)
    timings["pictures"] = time.perf_counter() - t0

    if s.classifier_steps > 0:
        t0 = time.perf_counter()
        outputs["attribute_accuracy"] = evaluate_colours(files.root, data, out, s, device)
        outputs["r_precision"] = evaluate_r_precision(files.root, out, device)
        timings["eval"] = time.perf_counter() - t0
    total = sum(timings.values())
    lines = [f"{k:>9}: {v:7.1f} s" for k, v in timings.items()] + [f"{'total':>9}: {total:7.1f} s"]
    (out / "timings.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs.update(gan=files.root, damsm=out / "damsm", data=data, timings=out / "timings.txt")
    return outputs


def evaluate_colours(
    run_dir: Path, data: Path, out: Path, s: DemoSettings, device: str | None = None
) -> Path:
    """Attribute accuracy of the demo's generator on test captions (``attribute_accuracy.json``).

    A part-colour classifier is trained on the real training images (64 px, ``classifier_steps``
    batches), checked on the real test images (a warning below 90 %), then scores one generated
    image per test caption: the fraction of the colours named in the captions that the
    classifier sees on the right part.
    """
    from attngan_fast.eval.attribute_accuracy import evaluate_synth_birds
    from attngan_fast.runtime.generation import generate_images, load_generation_models

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = load_generation_models(
        run_dir / "Model" / "netG.pth", run_dir / "Model" / "text_encoder.pth",
        load_vocab(run_dir / "vocab.json"), dev,
    )  # fmt: skip
    gen = torch.Generator(device=dev).manual_seed(0)

    def generate_fn(ids: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(ids), models.z_dim, device=dev, generator=gen)
        images, _ = generate_images(models.netG, models.text_encoder, ids.to(dev), lens, z, False)
        return images[-1]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        result = evaluate_synth_birds(
            data, generate_fn, per_image=s.eval_captions_per_image,
            steps=s.classifier_steps, device=dev,
        )  # fmt: skip
    record = {
        "attribute_accuracy": result.score.accuracy,
        "per_part": result.score.per_part,
        "named_colours": result.score.named,
        "classifier_held_out_accuracy": result.classifier.held_out_accuracy,
        "classifier_held_out_per_part": result.classifier.held_out_per_part,
        "chance": 0.1,
    }
    path = out / "attribute_accuracy.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def evaluate_r_precision(run_dir: Path, out: Path, device: str | None = None) -> Path:
    """``attngan-fast eval r-precision`` of the demo's run with its own DAMSM encoders: 200 test
    images, each ranking its caption among 20 (19 of other classes), 2 folds
    (``r_precision.json``)."""
    import contextlib
    import io

    from attngan_fast.eval.cli import main as eval_main

    path = out / "r_precision.json"
    argv = ["r-precision", "--checkpoint", str(run_dir), "--n-images", "200", "--candidates",
            "20", "--folds", "2", "--json", str(path)]  # fmt: skip
    if device is not None:
        argv += ["--device", device]
    with contextlib.redirect_stdout(io.StringIO()):
        if eval_main(argv) != 0:
            raise RuntimeError(f"R-precision of {run_dir} failed (see the message above)")
    return path


def write_pictures(
    run_dir: str | Path, out: str | Path, device: str | None = None, seed: int = 0
) -> dict[str, Path]:
    """``colours.png`` and ``generated/`` from a finished GAN run (EMA generator)."""
    from attngan_fast.generate import generate
    from attngan_fast.runtime.generation import load_generation_models, sample_images

    run_dir, out = Path(run_dir), Path(out)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = load_generation_models(
        run_dir / "Model" / "netG.pth",
        run_dir / "Model" / "text_encoder.pth",
        load_vocab(run_dir / "vocab.json"),
        dev,
    )
    per_row = 6
    rows = []
    for caption in COLOUR_CAPTIONS:
        ids = models.vocab.encode(caption).ids
        images, _ = sample_images(models, ids, per_row, seed)  # same seed: same noise per column
        rows.append(images[-1])
    colours = save_image_grid(torch.cat(rows), out / "colours.png", nrow=per_row)
    (out / "colours.txt").write_text("\n".join(COLOUR_CAPTIONS) + "\n", encoding="utf-8")
    generate(models, list(SAMPLE_CAPTIONS), out / "generated", n_samples=1, seed=seed)
    return {"colours": colours, "generated": out / "generated"}


def serve_command(run_dir: str | Path) -> str:
    """The command that serves the demo's generator in DrawingBot (page and HTTP API)."""
    return f"attngan-fast serve {shlex.quote(str(run_dir))}"


def closing_message(outputs: dict[str, Path]) -> str:
    """What the demo wrote and the commands to try next (the end of ``attngan-fast demo``)."""
    gan = shlex.quote(str(outputs["gan"]))
    rows = [
        (outputs["colours"], "one row per caption, one colour word changed per row"),
        (outputs["generated"], "every stage's image and the word-attention figure of 4 captions"),
        (Path(outputs["gan"]) / "samples", "sample grids written during training"),
        (Path(outputs["gan"]) / "Model" / "netG.pth", "the generator (its EMA weights)"),
        (outputs["damsm"], "the DAMSM text and image encoders"),
        (outputs["timings"], "the time each phase took"),
    ]
    if "attribute_accuracy" in outputs:
        rows.append((outputs["attribute_accuracy"], "the attribute accuracy and its details"))
    if "r_precision" in outputs:
        rows.append((outputs["r_precision"], "R-precision (20 candidates) with the demo's DAMSM"))
    width = max(len(str(path)) for path, _ in rows)
    lines = ["The demo wrote:"] + [f"  {str(path):<{width}}  {what}" for path, what in rows]
    lines += [
        "Next, try:",
        f'  attngan-fast generate --checkpoint {gan} "this bird has a green body and red wings"',
        f"  attngan-fast eval r-precision --checkpoint {gan} --n-images 200 --candidates 20 "
        "--folds 2",
        f"  attngan-fast eval attributes --checkpoint {gan}",
        '  type captions in a web page (needs pip install "attngan-fast[serve]"):',
        f"  {serve_command(outputs['gan'])}",
    ]
    return "\n".join(lines) + "\n"


def scaled(settings: DemoSettings, **changes: object) -> DemoSettings:
    """``settings`` with some fields changed (for experiments and tests)."""
    return replace(settings, **changes)
