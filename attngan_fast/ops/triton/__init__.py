"""The ``triton`` backend of ``attngan_fast.ops``: one module per op, with its kernels, their
launchers and its registration (importing this package registers the backend)."""

from attngan_fast.ops.triton import (  # noqa: F401  (each registers its op's implementation)
    batch_norm,
    damsm,
    upsample_conv,
    upsample_conv_bn,
    word_attention,
)
