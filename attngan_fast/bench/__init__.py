"""Benchmarks of attngan-fast: op microbenchmarks, the end-to-end training iteration, the roofline.

Modules: ``shapes`` (the real AttnGAN shapes, in one place), ``timing`` (CUDA-event timing with
rotating inputs), ``roofline`` (measured ceilings, analytic FLOPs and bytes), ``env`` (the
environment stamp), ``ops`` (op microbenchmarks), ``e2e`` (the training iteration), ``phases``
(per-phase profile), ``results`` (JSON, Markdown, README headline) and ``cli`` (``attngan-fast
bench``; also ``python -m attngan_fast.bench``).
"""
