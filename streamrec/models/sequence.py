"""The sequence model: causal self-attention over a user's recent items (SASRec-style).

A user's last ``max_len`` items (oldest first, left-padded with item 0) go through
an item embedding plus a learned position embedding (counted back from the newest
item) and ``blocks`` pre-norm Transformer blocks (ReLU feed-forward, as in SASRec)
whose attention only looks backwards and never at padding. So padding changes
nothing: a sequence gives the same outputs however much it is padded, and queries
run on the items alone (``sequence_query.py`` does it in numpy). The output at the
last position is the user's *query*; an item's score is the dot product of the
query with the item's embedding, so the same item vectors serve training, exact
scoring and the FAISS index.

Item ids are the model's own indices ``1..n_items`` (0 is padding); the mapping
from streamrec's item ids lives with the snapshot (``sequence_snapshot.py``).

>>> import torch
>>> model = SequenceModel(SequenceConfig(dim=8, max_len=4, blocks=1), n_items=5)
>>> model.query(torch.tensor([[0, 0, 3, 1]])).shape
torch.Size([1, 8])
>>> model.item_vectors().shape  # items 1..5, no padding row
torch.Size([5, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from streamrec.models.sequence_snapshot import SequenceConfig


class SequenceModel(nn.Module):
    """Causal self-attention over item sequences; see the module docstring."""

    def __init__(self, config: SequenceConfig, n_items: int) -> None:
        super().__init__()
        self.config = config
        self.items = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(config.dim, config.heads, dim_feedforward=config.dim,
                                           dropout=config.dropout, activation="relu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.items.weight, std=config.dim ** -0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()

    @property
    def n_items(self) -> int:
        """Items the model knows (indices ``1..n_items``)."""
        return self.items.num_embeddings - 1

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(batch, length, dim)`` of left-padded ``sequences`` ``(batch, length)``.

        Position ``t`` attends to the items at ``0..t`` only, never to padding (a padded
        position attends to itself alone, so no row is fully masked); padded positions
        output zeros.
        """
        length = sequences.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequences of {length} items; the model reads at most {self.config.max_len}")
        present = (sequences > 0).unsqueeze(-1)
        # Positions count back from the newest item, so the last one always has the same embedding.
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=sequences.device)
        hidden = self.items(sequences) * self.config.dim ** 0.5 + self.positions(positions)
        hidden = self.dropout(hidden) * present
        hidden = self.blocks(hidden, mask=self._attention_mask(sequences))
        return self.norm(hidden) * present

    def _attention_mask(self, sequences: torch.Tensor) -> torch.Tensor:
        """``(batch * heads, length, length)``, True where query ``i`` must not see key ``j``."""
        length = sequences.shape[1]
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=sequences.device), diagonal=1)
        padding = (sequences == 0).unsqueeze(1) & ~torch.eye(length, dtype=torch.bool, device=sequences.device)
        return (future | padding).repeat_interleave(self.config.heads, dim=0)

    def query(self, sequences: torch.Tensor) -> torch.Tensor:
        """The query vector ``(batch, dim)`` of each sequence: the output at its last position."""
        return self.forward(sequences)[:, -1]

    def item_vectors(self) -> torch.Tensor:
        """Item embeddings ``(n_items, dim)``, row ``i`` for item index ``i + 1`` (scores are dot products)."""
        return self.items.weight[1:]

    def grow(self, n_items: int) -> None:
        """Make room for items up to index ``n_items`` (new rows start small and random)."""
        old = self.items.weight.data
        if n_items + 1 <= old.shape[0]:
            return
        weight = torch.empty(n_items + 1, old.shape[1]).normal_(std=self.config.dim ** -0.5)
        weight[:old.shape[0]] = old
        self.items = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=0)
