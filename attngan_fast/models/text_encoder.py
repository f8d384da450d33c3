"""RNN_ENCODER: the DAMSM text encoder (bidirectional LSTM over word embeddings; the original's
``code/model.py``).

Parameter names are the original's (``encoder.weight``, ``rnn.weight_ih_l0``, ...,
``rnn.bias_hh_l0_reverse``), so ``text_encoder200.pth`` loads. Unlike the original, the batch need
not be sorted by caption length (``pack_padded_sequence(..., enforce_sorted=False)``), which keeps
samples in their order under DistributedDataParallel or any sampler.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Hidden = Tensor | tuple[Tensor, Tensor]


class RNN_ENCODER(nn.Module):
    """Captions B x T (token 0 = ``<end>``, the padding) and lengths B ->
    (words_emb B x nhidden x T', sent_emb B x nhidden).

    T' = the longest caption of the batch; words beyond a caption's length are zero. ``nhidden``
    is the total over both directions (256 = TEXT.EMBEDDING_DIM: 128 per direction).
    Embedding(ntoken, ninput) initialised uniform(-0.1, 0.1), dropout ``drop_prob`` on the
    embeddings, then an LSTM (or GRU with ``rnn_type="GRU"``) with batch_first.
    """

    def __init__(
        self,
        ntoken: int,
        ninput: int = 300,
        drop_prob: float = 0.5,
        nhidden: int = 256,
        nlayers: int = 1,
        bidirectional: bool = True,
        rnn_type: str = "LSTM",
    ) -> None:
        super().__init__()
        if rnn_type not in ("LSTM", "GRU"):
            raise ValueError(f"rnn_type must be 'LSTM' or 'GRU', got {rnn_type!r}")
        self.ntoken = ntoken
        self.ninput = ninput
        self.drop_prob = drop_prob
        self.nlayers = nlayers
        self.bidirectional = bidirectional
        self.rnn_type = rnn_type
        self.num_directions = 2 if bidirectional else 1
        self.nhidden = nhidden // self.num_directions  # per direction
        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        rnn_class = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        self.rnn = rnn_class(
            ninput,
            self.nhidden,
            nlayers,
            batch_first=True,
            dropout=drop_prob if nlayers > 1 else 0.0,  # between layers only: none for 1 layer
            bidirectional=bidirectional,
        )
        self.init_weights()

    def init_weights(self) -> None:
        """Embedding uniform(-0.1, 0.1); the RNN keeps PyTorch's default initialisation."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    def init_hidden(self, bsz: int) -> Hidden:
        """Zero initial state(s), (nlayers * num_directions) x bsz x nhidden each."""
        weight = next(self.parameters())
        zeros = weight.new_zeros(self.nlayers * self.num_directions, bsz, self.nhidden)
        return (zeros, zeros.clone()) if self.rnn_type == "LSTM" else zeros

    def forward(
        self, captions: Tensor, cap_lens: Tensor, hidden: Hidden | None = None
    ) -> tuple[Tensor, Tensor]:
        """captions LongTensor B x T, cap_lens B (any order, each >= 1), hidden as ``init_hidden``
        or None (zeros) -> (words_emb B x nhidden x T', sent_emb B x nhidden).

        The sequences are packed by ``cap_lens`` on the host: pass the data loader's CPU copy
        (a CUDA ``cap_lens`` is copied back, a synchronisation in every step)."""
        emb = self.drop(self.encoder(captions))
        packed = pack_padded_sequence(
            emb, cap_lens.detach().to("cpu", torch.int64), batch_first=True, enforce_sorted=False
        )
        output, hidden = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True)[0]  # B x T' x nhidden, input order
        words_emb = output.transpose(1, 2).contiguous()
        h_n = hidden[0] if self.rnn_type == "LSTM" else hidden
        last = h_n[-self.num_directions :]  # the last layer's final state, each direction
        sent_emb = last.transpose(0, 1).reshape(-1, self.nhidden * self.num_directions)
        return words_emb, sent_emb
