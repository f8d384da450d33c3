"""The generation core: caption embeddings and mask, and G on them with given or seeded noise."""

import torch

from attngan_fast.data.vocab import Vocabulary
from attngan_fast.models import G_NET, RNN_ENCODER
from attngan_fast.runtime.generation import (
    GenerationModels,
    batch_generate_fn,
    embed_captions,
    generate_images,
    run_generator,
)


def _models() -> GenerationModels:
    vocab = Vocabulary.build([["a", "red", "bird", "with", "blue", "wings"]])
    netG = G_NET(ngf=2, nef=8, ncf=4, z_dim=5, r_num=1, branch_num=2).eval()
    return GenerationModels(netG, RNN_ENCODER(len(vocab), ninput=6, nhidden=8).eval(), vocab)


def _captions() -> tuple[torch.Tensor, torch.Tensor]:
    captions = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0]])
    return captions, torch.tensor([3, 2, 1])


def test_embed_captions_shapes_and_mask():
    models = _models()
    captions, lens = _captions()
    words, sent, mask = embed_captions(models.text_encoder, captions, lens)
    assert words.shape == (3, 8, 3) and sent.shape == (3, 8)  # T' = the longest caption
    assert mask.tolist() == [[False] * 3, [False, False, True], [False, True, True]]
    assert not words.requires_grad and not sent.requires_grad
    assert torch.all(words[1, :, 2] == 0) and torch.all(words[2, :, 1:] == 0)


def test_run_generator_is_generate_images_with_seeded_noise():
    models = _models()
    captions, lens = _captions()
    assert models.z_dim == 5
    images, att_maps = run_generator(models, captions, lens, seed=11)
    assert [x.shape for x in images] == [(3, 3, 64, 64), (3, 3, 128, 128)]
    assert [a.shape for a in att_maps] == [(3, 3, 64, 64)]
    torch.manual_seed(11)
    z = torch.randn(3, models.z_dim)
    again, again_att = generate_images(models.netG, models.text_encoder, captions, lens, z)
    for a, b in zip(images + att_maps, again + again_att):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = torch.get_rng_state()
    run_generator(models, captions, lens, seed=12)
    assert torch.equal(state, torch.get_rng_state())  # the caller's stream is left alone


def test_batch_generate_fn_seeds_each_call():
    models = _models()
    captions, lens = _captions()
    first, second = batch_generate_fn(models, seed=3), batch_generate_fn(models, seed=3)
    a0, a1 = first(captions, lens), first(captions, lens)
    assert a0.shape == (3, 3, 128, 128) and not torch.equal(a0, a1)
    torch.testing.assert_close(second(captions, lens), a0, rtol=0, atol=0)
    torch.testing.assert_close(run_generator(models, captions, lens, 4)[0][-1], a1, rtol=0, atol=0)
