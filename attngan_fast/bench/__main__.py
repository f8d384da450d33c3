"""``python -m attngan_fast.bench``: the same as ``attngan-fast bench``."""

from attngan_fast.bench.cli import main

raise SystemExit(main())
