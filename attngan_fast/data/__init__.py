"""From captions on disk to batches: vocabulary, dataset layouts, SynthBirds, batching.

- :func:`load_text_image_dataset`: the original CUB (``layout='cub'``) and COCO layouts.
- :func:`load_folder_dataset`: a plain folder of images with a caption file beside each.
- :func:`make_synth_birds`: SynthBirds, procedural birds with captions, in the CUB layout.
- :func:`collate` / :func:`prepare_batch`: samples → :class:`Batch` (sorted like the original).
"""

from attngan_fast.data.captions import CaptionLine, encode_caption_file
from attngan_fast.data.dataset import (
    Batch,
    CaptionedImageDataset,
    Sample,
    collate,
    prepare_batch,
    sort_by_caption_length,
)
from attngan_fast.data.folder import load_folder_dataset
from attngan_fast.data.images import BranchImages, branch_sizes
from attngan_fast.data.synth_birds import load_synth_attributes, make_synth_birds
from attngan_fast.data.text_image import LAYOUTS, load_text_image_dataset
from attngan_fast.data.vocab import END_TOKEN, EncodedCaption, Vocabulary, tokenize

__all__ = [
    "END_TOKEN",
    "LAYOUTS",
    "Batch",
    "BranchImages",
    "CaptionLine",
    "CaptionedImageDataset",
    "EncodedCaption",
    "Sample",
    "Vocabulary",
    "branch_sizes",
    "collate",
    "encode_caption_file",
    "load_folder_dataset",
    "load_synth_attributes",
    "load_text_image_dataset",
    "make_synth_birds",
    "prepare_batch",
    "sort_by_caption_length",
    "tokenize",
]
