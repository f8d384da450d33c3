"""Two ``gloo`` processes on the CPU: DDP keeps every parameter identical across ranks.

Each rank trains on different data (its own synthetic batches, captions of different lengths, so
the packed text encoder sees different shapes per rank); after the steps the parameters of G,
the Ds, G's EMA and (for DAMSM pretraining) both encoders must be bit-identical on both ranks.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_helpers import tiny_gan_cfg

VOCAB = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in tensors])


def _same_on_all_ranks(t: torch.Tensor) -> bool:
    gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, t)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    from attngan_fast.ops import damsm_loss
    from attngan_fast.runtime.networks import EncoderSpec, build_image_encoder, build_text_encoder
    from attngan_fast.train.distributed import cleanup, init_distributed, wrap_ddp
    from attngan_fast.train.gan_step import build_gan_state, gan_train_step, synthetic_batch

    info = init_distributed("cpu")
    try:
        torch.manual_seed(0)  # same init everywhere (DDP also broadcasts rank 0's)
        state = build_gan_state(tiny_gan_cfg(), VOCAB, "cpu", image_encoder_kind="small", dist=info)
        torch.manual_seed(100 + rank)  # different noise and data per rank
        for step in range(2):
            g = torch.Generator().manual_seed(10 * rank + step)
            gan_train_step(state, synthetic_batch(state.cfg, VOCAB, 4, generator=g))
        ok = {
            "G": _same_on_all_ranks(_flat(state.generator.parameters())),
            "D": _same_on_all_ranks(_flat(state.discriminators.parameters())),
            "EMA": _same_on_all_ranks(_flat(state.ema.params)),
            "moved": not torch.equal(_flat(state.generator.parameters()), _flat(state.ema.params)),
        }

        # DAMSM pretraining step: DDP over the packed text encoder and the image encoder.
        torch.manual_seed(0)
        spec = EncoderSpec(n_words=VOCAB, nef=16, image_encoder="small", small_ndf=4, small_size=32)
        text, image = build_text_encoder(spec), build_image_encoder(spec)
        text_ddp, image_ddp = wrap_ddp(text, info), wrap_ddp(image, info)
        params = list(text.parameters()) + list(image.parameters())
        opt = torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999))
        g = torch.Generator().manual_seed(rank)
        lens = torch.tensor([7, 5, 3, 2]) if rank == 0 else torch.tensor([4, 4, 1, 1])
        captions = torch.randint(1, VOCAB, (4, int(lens.max())), generator=g)
        captions = captions * (torch.arange(captions.shape[1])[None] < lens[:, None])
        region, code = image_ddp(torch.rand(4, 3, 32, 32, generator=g) * 2 - 1)
        words, sent = text_ddp(captions, lens)
        loss = sum(damsm_loss(region, code, words, sent, lens, None, 4.0, 5.0, 10.0)[:4])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(text.parameters(), 0.25)
        opt.step()
        ok["text_encoder"] = _same_on_all_ranks(_flat(text.parameters()))
        ok["image_encoder"] = _same_on_all_ranks(_flat(image.parameters()))
        results[rank] = ok
    finally:
        cleanup(info)


def test_two_gloo_processes_stay_in_sync():
    port = _free_port()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
        results = dict(results)
    assert set(results) == {0, 1}
    for rank, ok in results.items():
        assert all(ok.values()), (rank, ok)
