"""The fused ops of attngan-fast, each with a pure-PyTorch reference and fast backends.

Choose the implementation with ``backend=`` on a call, the environment variable
``ATTNGAN_FAST_BACKEND`` (``torch`` | ``triton`` | ``cuda`` | ``auto``), or let it pick the fastest
available for the tensors' device (the reference on CPU). See ``_backend.py``.
"""

from attngan_fast.ops._backend import BackendUnavailableError, available_backends
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
from attngan_fast.ops.upsample_conv import upsample_conv3x3, upsample_conv3x3_reference
from attngan_fast.ops.upsample_conv_bn import (
    upsample_conv3x3_bn_glu,
    upsample_conv3x3_bn_glu_reference,
)
from attngan_fast.ops.word_attention import word_attention, word_attention_reference

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
    "upsample_conv3x3",
    "upsample_conv3x3_bn_glu",
    "upsample_conv3x3_bn_glu_reference",
    "upsample_conv3x3_reference",
    "word_attention",
    "word_attention_reference",
]
