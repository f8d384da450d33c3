"""Evaluation of text-to-image generators.

- ``r_precision``: DM-GAN's R-precision with the DAMSM encoders (true caption + 99 of other
  classes, folds, mean and std).
- ``attribute_accuracy``: SynthBirds only; a part-colour classifier trained on real images checks
  that generated birds show the colours their captions name.
- ``inception_metrics``: Inception score and FID from a local Inception-v3 weights file.
- ``cli``: ``attngan-fast eval r-precision | attributes | inception``.
"""

from attngan_fast.eval.inception_metrics import (
    fid_from_features,
    frechet_distance,
    inception_metrics,
    inception_score,
    load_inception,
)
from attngan_fast.eval.r_precision import evaluate_r_precision, r_precision

__all__ = [
    "evaluate_r_precision",
    "fid_from_features",
    "frechet_distance",
    "inception_metrics",
    "inception_score",
    "load_inception",
    "r_precision",
]
