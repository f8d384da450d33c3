"""What the talk's experiments train: each sweep's settings, their sizes, the talk's numbers.

- ``lambda``: AttnGAN1 with the DAMSM weight lambda in {0, 0.1, 1, 5, 10} (the talk's "The DAMSM
  loss is important" table; lambda 0 is its "no DAMSM" row).
- ``baselines``: AttnGAN2 and AttnGAN1 (lambda 5) against StackGAN-v2 and GAN-INT-CLS (the
  talk's comparison with previous methods), each a preset of ``attngan_fast.config``.

Every setting of a sweep trains with the same ``Sizes`` (widths, batch, learning rate, steps,
seed), so the settings differ only in what makes each system what it is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One trained model of a sweep: a preset, optionally with its DAMSM lambda changed, and
    the talk's CUB numbers for it (None where the talk gives none)."""

    name: str  # run folder and the row's key, e.g. "attngan1-lambda5"
    label: str  # the row's label in the table
    preset: str
    lambda_: float | None = None  # TRAIN.SMOOTH.LAMBDA (None: the preset's)
    talk_is: float | None = None  # CUB Inception score in the talk
    talk_r_precision: float | None = None  # CUB R-precision (%) in the talk


def _lambda_setting(value: float, talk_is: float, talk_r: float) -> Setting:
    label = "AttnGAN1, no DAMSM" if value == 0 else f"AttnGAN1, λ = {value:g}"
    return Setting(f"attngan1-lambda{value:g}", label, "attngan1", value, talk_is, talk_r)


SWEEPS: dict[str, tuple[Setting, ...]] = {
    "lambda": (
        _lambda_setting(0.0, 3.98, 10.37),
        _lambda_setting(0.1, 4.19, 16.55),
        _lambda_setting(1.0, 4.35, 34.96),
        _lambda_setting(5.0, 4.35, 58.65),
        _lambda_setting(10.0, 4.29, 63.87),
    ),
    "baselines": (
        Setting("attngan2-lambda5", "AttnGAN2, λ = 5", "attngan2", 5.0, 4.36, 67.82),
        _lambda_setting(5.0, 4.35, 58.65),
        Setting("stackgan2", "StackGAN-v2", "stackgan2", None, 3.82, None),
        Setting("gan-int-cls", "GAN-INT-CLS", "gan-int-cls", None, 2.88, None),
    ),
}
"""The settings of each sweep. A setting in both (AttnGAN1, lambda 5) is trained once per
output folder and reported in both tables."""


@dataclass(frozen=True)
class Sizes:
    """Data, encoder, network and evaluation sizes shared by every setting of a sweep.

    SynthBirds (made when no dataset is given): ``n_train`` / ``n_test`` images of
    ``image_size`` px. DAMSM (pretrained when no encoders are given): ``damsm_steps`` batches of
    ``damsm_batch``, small image encoder at ``small_size`` px. GAN: widths ``ngf`` / ``ndf``,
    ``r_num`` residual blocks, ``batch``, learning rate ``lr``, EMA decay, ``budget`` steps (the
    default of ``--budget``), a checkpoint every ``checkpoint_every`` steps. Evaluation:
    R-precision over ``eval_images`` generated images (``candidates`` captions ranked each,
    ``folds`` folds), attribute accuracy over ``attribute_per_image`` captions of each test
    image with a classifier trained for ``classifier_steps`` batches.
    """

    n_train: int
    n_test: int
    image_size: int
    embedding_dim: int
    damsm_steps: int
    damsm_batch: int
    small_size: int
    small_ndf: int
    ngf: int
    ndf: int
    r_num: int
    batch: int
    budget: int
    eval_images: int
    candidates: int
    folds: int
    attribute_per_image: int
    classifier_steps: int
    checkpoint_every: int = 50
    damsm_lr: float = 2e-3
    lr: float = 2e-4
    ema_decay: float = 0.99
    eval_batch: int = 50


SIZES: dict[str, Sizes] = {
    # A shared 2-core CPU, one thread: about 25 minutes of DAMSM pretraining, then 300 steps
    # take 4-6 minutes for an AttnGAN1 and about 20 for an AttnGAN2.
    "cpu": Sizes(
        n_train=2000, n_test=200, image_size=128, embedding_dim=64, damsm_steps=1500,
        damsm_batch=32, small_size=64, small_ndf=16, ngf=4, ndf=8, r_num=1, batch=16,
        budget=300, eval_images=1000, candidates=100, folds=10, attribute_per_image=2,
        classifier_steps=1000,
    ),
    "gpu": Sizes(
        n_train=8000, n_test=500, image_size=256, embedding_dim=256, damsm_steps=2000,
        damsm_batch=48, small_size=64, small_ndf=64, ngf=32, ndf=64, r_num=2, batch=32,
        budget=10000, eval_images=5000, candidates=100, folds=10, attribute_per_image=2,
        classifier_steps=1000, checkpoint_every=500, ema_decay=0.999,
    ),
    # Seconds: for tests.
    "tiny": Sizes(
        n_train=24, n_test=8, image_size=64, embedding_dim=16, damsm_steps=4, damsm_batch=4,
        small_size=32, small_ndf=4, ngf=2, ndf=2, r_num=1, batch=4, budget=3, eval_images=8,
        candidates=4, folds=2, attribute_per_image=1, classifier_steps=2, checkpoint_every=1,
        eval_batch=4,
    ),
}  # fmt: skip
