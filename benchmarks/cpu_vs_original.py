"""One AttnGAN training iteration on the CPU: this library against the original code, side by side.

    python benchmarks/cpu_vs_original.py --original PATH/TO/AttnGAN/code [--batch 8] [--threads 2]
        [--repeats 6] [--variants fp32,fast] [--json out.json]

``--original`` is the ``code/`` folder of a checkout of the original AttnGAN repository
(taoxugit/AttnGAN, Python 2 / PyTorch 0.3). Nothing of it is stored here: the script copies its
four model files (``model.py``, ``GlobalAttention.py``, ``miscc/config.py``, ``miscc/losses.py``,
``miscc/utils.py``) into a temporary folder and rewrites a few lines for Python 3 and the current
torch (see ``PATCHES``), then imports them from there. Two modules the original imports are
replaced by stand-ins when missing: ``easydict`` (a dict with attribute access) and
``torchvision.models.inception_v3``, for which this library's Inception-v3 stands in (the same
layers, names and BasicConv2d = conv + BatchNorm(eps 1e-3) + ReLU; its weights are random on both
sides: timing does not depend on them).

Both models get the birds config (3 stages, GF_DIM 32, DF_DIM 64, R_NUM 2, EMBEDDING_DIM 256,
GAMMA 4 / 5 / 10, LAMBDA 5), the batch given, fp32 for the original, the same random batch
(captions sorted by length, as the original's loader sorts them; one class per sample). One
iteration is what the original trainer does per batch: text encoder -> G -> for each of the
three Ds its loss on the fakes, backward and Adam step -> G loss (adversarial terms, LAMBDA x DAMSM
through the image encoder on the 256 px fakes, KL) -> backward -> G's Adam step -> EMA of G. The
library runs its own ``gan_train_step``. Runs alternate between the implementations (the order
swapped at every repeat) in one process, after warm-up iterations, so that a change of machine load
hits all of them alike; the medians of wall and process CPU time and the load average (before,
during and after) are printed.

Library variants (``--variants``, comma-separated):

* ``before`` -- the library before its CPU path: the ``torch`` backend of every op, fp32, NCHW,
  PyTorch's default (per-tensor) Adam;
* ``fp32``  -- as ``before`` with the fused Adam (it and ``bf16*`` keep the ``torch`` backend);
* ``bf16``, ``bf16-cl`` -- ``fp32`` under bf16 autocast, in NCHW / channels-last;
* ``cpu-fp32``, ``cpu-fp32-cl`` -- automatic backends (the ``cpu`` backend,
  ``attngan_fast.ops.cpu``) and the fused Adam in fp32, NCHW / channels-last (the library's
  defaults on a CPU, the demo's layout);
* ``fast``  -- the CPU fast path: the ``cpu`` backend, bf16 autocast where the CPU has native
  bf16 (fp32 otherwise), channels-last, fused Adam;
* ``fast-nchw`` -- ``fast`` in NCHW;
* ``fast-compile`` -- ``fast`` with G, the Ds and the image encoder compiled by inductor (C++);
  the compilation is in the warm-up line;
* ``cpu-fp32-cl-compile`` -- ``cpu-fp32-cl`` compiled the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

# (file, pattern, replacement): regex substitutions that make the original run on Python 3 and the
# current torch without changing what it computes.
PATCHES: list[tuple[str, str, str]] = [
    ("*", r"\.data\[0\]", ".item()"),  # 0-dim tensors are not indexable
    ("*", r"\bF\.sigmoid\(", "torch.sigmoid("),
    ("*", r"nn\.Softmax\(\)", "nn.Softmax(dim=1)"),  # the implicit dim of a 2-D input
    ("*", r"nn\.init\.orthogonal\(", "nn.init.orthogonal_("),
    ("miscc/losses.py", r"torch\.ByteTensor\(masks\)", "torch.from_numpy(masks).bool()"),
    ("miscc/config.py", r"\.iteritems\(\)", ".items()"),
    ("miscc/config.py", r"not b\.has_key\(k\)", "k not in b"),
    ("miscc/utils.py", r"^import skimage\.transform$", ""),  # visualisation only
    ("model.py", r"model\.load_state_dict\(model_zoo\.load_url\(url\)\)", "pass"),  # no download
]
FILES = ("model.py", "GlobalAttention.py", "miscc/__init__.py", "miscc/config.py",
         "miscc/losses.py", "miscc/utils.py")  # fmt: skip

VOCAB = 5450  # the released birds caption pickle
WORDS_NUM = 18


def patched_copy(original: Path, dest: Path) -> None:
    """Copy the original's model files to ``dest`` with ``PATCHES`` applied."""
    for name in FILES:
        src = original / name
        if not src.is_file():
            raise SystemExit(f"--original {original}: {name} not found (give the code/ folder)")
        text = src.read_text(encoding="utf-8", errors="replace")
        for file, pattern, repl in PATCHES:
            if file in ("*", name):
                text = re.sub(pattern, repl, text, flags=re.MULTILINE)
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(text, encoding="utf-8")


def _install_stand_ins() -> None:
    """``easydict`` and ``torchvision.models.inception_v3`` where they are not installed."""
    try:
        import easydict  # noqa: F401
    except ImportError:

        class EasyDict(dict):
            def __getattr__(self, key):
                try:
                    return self[key]
                except KeyError as exc:
                    raise AttributeError(key) from exc

            def __setattr__(self, key, value):
                self[key] = value

        sys.modules["easydict"] = types.SimpleNamespace(EasyDict=EasyDict)
    try:
        import torchvision.models  # noqa: F401
    except ImportError:
        from attngan_fast.models.inception import Inception3

        models = types.ModuleType("torchvision.models")
        models.inception_v3 = lambda **_: Inception3()
        tv = types.ModuleType("torchvision")
        tv.models = models
        sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, models


def _configure_original(cfg, batch: int) -> None:
    cfg.CUDA = False
    cfg.TREE.BRANCH_NUM, cfg.TREE.BASE_SIZE = 3, 64
    cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.FLAG = batch, True
    cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2 = 4.0, 5.0
    cfg.TRAIN.SMOOTH.GAMMA3, cfg.TRAIN.SMOOTH.LAMBDA = 10.0, 5.0
    cfg.GAN.GF_DIM, cfg.GAN.DF_DIM, cfg.GAN.R_NUM = 32, 64, 2
    cfg.TEXT.EMBEDDING_DIM, cfg.TEXT.WORDS_NUM = 256, WORDS_NUM


def random_batch(batch: int, seed: int = 0, stages: int = 3) -> dict:
    """Images 64/128/256 in [-1, 1], captions B x 18 sorted by length (longest first)."""
    g = torch.Generator().manual_seed(seed)
    sizes = (64, 128, 256)[:stages]
    images = [torch.rand(batch, 3, s, s, generator=g) * 2 - 1 for s in sizes]
    lens = torch.randint(8, WORDS_NUM + 1, (batch,), generator=g)
    lens[0] = WORDS_NUM
    lens = lens.sort(descending=True).values
    words = torch.randint(1, VOCAB, (batch, WORDS_NUM), generator=g)
    captions = words * (torch.arange(WORDS_NUM)[None, :] < lens[:, None])
    return {"images": images, "captions": captions, "cap_lens": lens}


@dataclass
class Runner:
    """One implementation's training iteration (``step(batch) -> G loss``) and, for profiles, its
    networks by name (``G``, ``D0``.., ``image_encoder``, ``text_encoder``), functions to time as
    one part each (owner, attribute, part name) and the optimisers."""

    step: Callable[[dict], float]
    modules: dict[str, nn.Module]
    functions: list[tuple[object, str, str]] = field(default_factory=list)
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)


def original_runner(original: Path, batch: int, tmp: Path) -> Runner:
    """Build the original's models on the CPU; returns its training iteration on a batch."""
    patched_copy(original, tmp)
    _install_stand_ins()
    sys.path.insert(0, str(tmp))
    from miscc.config import cfg

    _configure_original(cfg, batch)
    import model as M
    from miscc.losses import KL_loss, discriminator_loss, generator_loss
    from miscc.utils import copy_G_params, weights_init

    text_encoder = M.RNN_ENCODER(VOCAB, nhidden=cfg.TEXT.EMBEDDING_DIM).eval()
    image_encoder = M.CNN_ENCODER(cfg.TEXT.EMBEDDING_DIM).eval()
    for p in [*text_encoder.parameters(), *image_encoder.parameters()]:
        p.requires_grad = False
    netG = M.G_NET()
    netsD = [M.D_NET64(), M.D_NET128(), M.D_NET256()]
    netG.apply(weights_init)
    for d in netsD:
        d.apply(weights_init)
    opt_g = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opts_d = [torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999)) for d in netsD]
    avg_param_g = copy_G_params(netG)
    real_labels, fake_labels = torch.ones(batch), torch.zeros(batch)
    match_labels = torch.arange(batch)
    class_ids = np.arange(batch)
    noise = torch.empty(batch, cfg.GAN.Z_DIM)

    def step(data: dict) -> float:
        captions, cap_lens, imgs = data["captions"], data["cap_lens"], data["images"]
        hidden = text_encoder.init_hidden(batch)
        words_embs, sent_emb = text_encoder(captions, cap_lens, hidden)
        words_embs, sent_emb = words_embs.detach(), sent_emb.detach()
        mask = (captions == 0)[:, : words_embs.size(2)]
        noise.normal_(0, 1)
        fake_imgs, _, mu, logvar = netG(noise, sent_emb, words_embs, mask)
        for i, netD in enumerate(netsD):
            netD.zero_grad()
            err_d = discriminator_loss(
                netD, imgs[i], fake_imgs[i], sent_emb, real_labels, fake_labels
            )
            err_d.backward()
            opts_d[i].step()
        netG.zero_grad()
        err_g, _ = generator_loss(
            netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels,
            cap_lens, class_ids,
        )  # fmt: skip
        err_g = err_g + KL_loss(mu, logvar)
        err_g.backward()
        opt_g.step()
        with torch.no_grad():
            for p, avg_p in zip(netG.parameters(), avg_param_g):
                avg_p.mul_(0.999).add_(p, alpha=0.001)
        return float(err_g.detach())

    import miscc.losses

    modules = {"G": netG, "image_encoder": image_encoder, "text_encoder": text_encoder}
    modules.update({f"D{i}": d for i, d in enumerate(netsD)})
    optimizers = {"optim_G": opt_g, **{f"optim_D{i}": o for i, o in enumerate(opts_d)}}
    damsm = [(miscc.losses, f, "DAMSM loss") for f in ("words_loss", "sent_loss")]
    return Runner(step, modules, damsm, optimizers)


def demo_config(batch: int):
    """The GAN config and small image encoder of ``attngan-fast demo`` (cpu sizes)."""
    from attngan_fast.config import config_from_dict, preset
    from attngan_fast.demo import demo_settings
    from attngan_fast.models import SmallImageEncoder

    s = demo_settings("cpu")
    cfg = config_from_dict(
        {
            "TREE": {"BRANCH_NUM": s.branches},
            "GAN": {"GF_DIM": s.ngf, "DF_DIM": s.ndf, "R_NUM": s.r_num},
            "TEXT": {"EMBEDDING_DIM": s.embedding_dim},
            "TRAIN": {"BATCH_SIZE": batch, "SMOOTH": {"LAMBDA": s.lambda_}},
        },
        preset("birds"),
    )
    return cfg, SmallImageEncoder(s.embedding_dim, ndf=s.small_ndf, image_size=s.small_size)


def library_runner(variant: str, batch: int, config: str = "birds") -> Runner:
    """Build this library's GAN state for ``variant``; returns its ``gan_train_step``."""
    from attngan_fast import ops
    from attngan_fast.config import config_from_dict, preset
    from attngan_fast.data.dataset import Batch
    from attngan_fast.train.gan_step import build_gan_state, compile_models, gan_train_step

    kwargs = {}
    if config == "demo":
        cfg, kwargs["image_encoder"] = demo_config(batch)
    else:
        cfg = config_from_dict({"TRAIN": {"BATCH_SIZE": batch}}, preset("birds"))
    precision, channels_last, cpu_backend = "fp32", False, False
    if variant == "bf16" or variant == "bf16-cl":
        channels_last = variant == "bf16-cl"
        precision = "bf16"
    elif variant in ("cpu-fp32", "cpu-fp32-cl", "cpu-fp32-cl-compile"):
        channels_last, cpu_backend = variant != "cpu-fp32", True
    elif variant in ("fast", "fast-compile", "fast-nchw"):
        from attngan_fast.ops import cpu

        precision = "bf16" if cpu.native_bf16() else "fp32"
        channels_last, cpu_backend = variant != "fast-nchw", True
    elif variant not in ("fp32", "before"):
        raise SystemExit(f"unknown library variant {variant!r}")
    state = build_gan_state(cfg, VOCAB, "cpu", precision, channels_last=channels_last, **kwargs)
    if variant.endswith("-compile"):
        compile_models(state)
    if variant == "before":  # the Adam of the library before the CPU path: PyTorch's default loop
        adam = {"betas": (0.5, 0.999), "fused": None}
        state.optimizer_g = torch.optim.Adam(state.generator.parameters(), lr=2e-4, **adam)
        state.optimizers_d = [
            torch.optim.Adam(d.parameters(), lr=2e-4, **adam) for d in state.discriminators
        ]

    def step(data: dict) -> float:
        b = Batch(
            images=data["images"], captions=data["captions"], cap_lens=data["cap_lens"],
            class_ids=torch.arange(batch), keys=[str(i) for i in range(batch)],
            order=torch.arange(batch),
        )  # fmt: skip
        with ops.use_backend("auto" if cpu_backend else "torch"):
            return gan_train_step(state, b)["errG_total"]

    modules = {"G": state.generator, "image_encoder": state.image_encoder,
               "text_encoder": state.text_encoder}  # fmt: skip
    modules.update({f"D{i}": d for i, d in enumerate(state.discriminators)})
    optimizers = {"optim_G": state.optimizer_g}
    optimizers.update({f"optim_D{i}": o for i, o in enumerate(state.optimizers_d)})
    functions = [(ops, "damsm_loss", "DAMSM loss"), (state.ema, "update", "EMA")]
    return Runner(step, modules, functions, optimizers)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", type=Path, help="the original AttnGAN code/ folder")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="default: OMP_NUM_THREADS or 2")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", default="fp32", help="library variants: fp32,bf16,fast")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--config",
        choices=["birds", "demo"],
        default="birds",
        help="birds: the original's birds config; demo: the CPU demo's GAN (2 stages, ngf 8, "
        "small image encoder; library only, batch 16 unless --batch)",
    )
    args = p.parse_args(argv)
    if args.config == "demo" and args.original is not None:
        raise SystemExit("--config demo times the library only (the original has no such model)")

    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if args.config == "demo" and "--batch" not in (argv or sys.argv):
        args.batch = 16
    data = random_batch(args.batch, stages=2 if args.config == "demo" else 3)
    runners: dict[str, Callable[[dict], float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="attngan_original_"))
    try:
        if args.original is not None:
            runners["original"] = original_runner(args.original.resolve(), args.batch, tmp).step
        for v in [v.strip() for v in args.variants.split(",") if v.strip()]:
            runners[f"library {v}"] = library_runner(v, args.batch, args.config).step
        for name, fn in runners.items():
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                fn(data)
            print(f"warm-up {name}: {(time.perf_counter() - t0) / max(args.warmup, 1):.2f} s/it")
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in runners}
        cpu_times: dict[str, list[float]] = {name: [] for name in runners}
        names = list(runners)
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                runners[name](data)
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
            print(f"repeat {r + 1} (load {os.getloadavg()[0]:.2f}): "
                  + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))  # fmt: skip
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    medians = {n: statistics.median(t) for n, t in times.items()}
    result = {
        "config": args.config, "batch": args.batch, "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
        "load_before": load_before, "load_after": load_after, "seconds": times,
        "median_s": medians, "cpu_seconds": cpu_times,
        "median_cpu_s": {n: statistics.median(t) for n, t in cpu_times.items()},
    }  # fmt: skip
    print(f"\n{args.config} config, batch {args.batch}, {result['threads']} threads, "
          f"{args.repeats} alternating repeats; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")  # fmt: skip
    base = medians.get("original")
    for n, m in medians.items():
        ratio = f"  {base / m:.2f}x the original" if base and n != "original" else ""
        spread = f"[{min(times[n]):.2f}, {max(times[n]):.2f}]"
        cpu = result["median_cpu_s"][n]
        print(f"  {n:<16} median {m:6.2f} s/it  {spread}  (CPU time {cpu:.2f} s){ratio}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
