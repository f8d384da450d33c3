"""The talk's experiments: ``attngan-fast experiment lambda`` and ``experiment baselines``.

- ``settings``: the settings of each sweep (presets, lambdas, the talk's CUB numbers) and the
  sizes they share (``cpu``, ``gpu``, ``tiny``).
- ``sweep``: train every setting with the same budget and seed, evaluate it, resumably.
- ``report``: the table (Markdown, JSON) and the plot.
- ``cli``: the command line.

It composes training and evaluation, so it sits with ``demo`` and ``bench`` above the
applications (the import-linter contracts in ``pyproject.toml``).
"""
