"""What the applications (train, eval, generate, serve) share between the models and their jobs.

- ``networks``: every network built, from a ``Config``, an ``EncoderSpec`` or a state dict's
  shapes, and loaded from its files (the original code's included).
- ``generation``: captions to images (prompts, text embeddings, G with given or seeded noise).
- ``retrieval``: text-image retrieval with the DAMSM codes (R-precision, recall at 1), for
  evaluation and DAMSM pretraining.
- ``run_dir``: the files of a training run's folder, and finding a model's files again.
- ``checkpoint``: atomic saves, weights-only loading, which file a state dict is.
- ``loaders``: a dataset split in any layout, batched in the order of a resumable ``sampler``.
- ``seeding``: seeding every random generator, capturing and restoring their states.

This layer imports ``ops``, ``config``, ``models``, ``losses``, ``data`` and ``viz`` below it and
no application above it (the import-linter contracts in ``pyproject.toml``).
"""
