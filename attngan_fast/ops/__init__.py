"""The fused ops of attngan-fast, each with a pure-PyTorch reference and fast backends.

Which implementation runs a call: the op's ``backend=`` argument, else the innermost
``use_backend(...)`` block, else the environment variable ``ATTNGAN_FAST_BACKEND`` (a backend
name, or empty / ``auto``), else the first backend, in the device's order of preference, that can
run the call (on CPU tensors the ``cpu`` backend where it has the op, else ``torch``).
``available_backends(op, device)`` lists them; ``registry.py`` says how backends register.
"""

from attngan_fast.ops import registry
from attngan_fast.ops.batch_norm import (
    batch_norm_add,
    batch_norm_add_reference,
    batch_norm_glu,
    batch_norm_glu_reference,
)
from attngan_fast.ops.damsm import (
    DamsmLoss,
    DamsmWordsLoss,
    damsm_attention_maps,
    damsm_loss,
    damsm_sentence_loss,
    damsm_word_similarity_reference,
    damsm_words_loss,
)
from attngan_fast.ops.registry import (
    BackendUnavailableError,
    available_backends,
    resolve_backend,
    use_backend,
)
from attngan_fast.ops.upsample_conv import upsample_conv3x3, upsample_conv3x3_reference
from attngan_fast.ops.upsample_conv_bn import (
    upsample_conv3x3_bn_glu,
    upsample_conv3x3_bn_glu_reference,
)
from attngan_fast.ops.word_attention import word_attention, word_attention_reference

registry.load_builtin_backends()

__all__ = [
    "BackendUnavailableError",
    "DamsmLoss",
    "DamsmWordsLoss",
    "available_backends",
    "batch_norm_add",
    "batch_norm_add_reference",
    "batch_norm_glu",
    "batch_norm_glu_reference",
    "damsm_attention_maps",
    "damsm_loss",
    "damsm_sentence_loss",
    "damsm_words_loss",
    "damsm_word_similarity_reference",
    "registry",
    "resolve_backend",
    "upsample_conv3x3",
    "upsample_conv3x3_bn_glu",
    "upsample_conv3x3_bn_glu_reference",
    "upsample_conv3x3_reference",
    "use_backend",
    "word_attention",
    "word_attention_reference",
]
