"""The AttnGAN networks with the original module names (checkpoints of the original code load).

Generators ``G_NET`` and ``G_DCGAN`` (fused-op forward; ``GeneratorSpec`` says which member
of the family), discriminators ``D_NET64/128/256`` (logits), DAMSM text
encoder ``RNN_ENCODER`` and image encoders ``CNN_ENCODER`` (Inception-v3) and
``SmallImageEncoder``, plus ``Inception3`` for FID / Inception score and the original weight
init. They are built from a ``Config`` or a state dict in ``attngan_fast.runtime.networks``.
"""

from attngan_fast.models.attention import GlobalAttentionGeneral
from attngan_fast.models.discriminator import (
    D_GET_LOGITS,
    D_NET64,
    D_NET128,
    D_NET256,
    D_NETS,
    Block3x3_leakRelu,
    downBlock,
    encode_image_by_16times,
)
from attngan_fast.models.generator import (
    CA_NET,
    G_DCGAN,
    G_NET,
    GET_IMAGE_G,
    INIT_STAGE_G,
    NEXT_STAGE_G,
    TEXT_PROJ,
    GeneratorSpec,
    ResBlock,
    upBlock,
)
from attngan_fast.models.image_encoder import CNN_ENCODER, SmallImageEncoder
from attngan_fast.models.inception import Inception3, InceptionTrunk, load_inception_weights
from attngan_fast.models.init import init_weights, weights_init
from attngan_fast.models.text_encoder import RNN_ENCODER

__all__ = [
    "CA_NET",
    "CNN_ENCODER",
    "D_GET_LOGITS",
    "D_NET64",
    "D_NET128",
    "D_NET256",
    "D_NETS",
    "G_DCGAN",
    "G_NET",
    "GET_IMAGE_G",
    "GeneratorSpec",
    "INIT_STAGE_G",
    "NEXT_STAGE_G",
    "RNN_ENCODER",
    "Block3x3_leakRelu",
    "GlobalAttentionGeneral",
    "Inception3",
    "InceptionTrunk",
    "ResBlock",
    "SmallImageEncoder",
    "TEXT_PROJ",
    "downBlock",
    "encode_image_by_16times",
    "init_weights",
    "weights_init",
    "load_inception_weights",
    "upBlock",
]
