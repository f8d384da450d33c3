"""What every application (train, eval, generate, serve) needs between the models and its job.

- ``run_dir``: the files of a training run's folder, and finding them again.
- ``checkpoint``: atomic saves, weights-only loading, which file a state dict is.
- ``networks``: the DAMSM encoder pair: build it, save it, load it back.
- ``loaders``: a dataset split in any layout, batched by a resumable ``sampler``.

This layer imports ``ops``, ``config``, ``models``, ``losses``, ``data`` and ``viz`` below it and
no application above it (the import-linter contracts in ``pyproject.toml``).
"""
