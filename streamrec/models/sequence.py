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
from streamrec's item ids lives with the checkpoint (``sequence_training.py``).

>>> import torch
>>> model = SequenceModel(SequenceConfig(dim=8, max_len=4, blocks=1), n_items=5)
>>> model.query(torch.tensor([[0, 0, 3, 1]])).shape
torch.Size([1, 8])
>>> model.item_vectors().shape  # items 1..5, no padding row
torch.Size([5, 8])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class SequenceConfig:
    """The sequence model's shape and how it is trained.

    Attributes
    ----------
    max_len
        Items of a user's history the model reads (the most recent ones).
    dim, blocks, heads, dropout
        Embedding width, Transformer blocks, attention heads (must divide ``dim``), dropout.
    negatives
        Sampled-softmax negatives per training step, shared by the batch (uniform over the
        catalogue, plus the batch's own targets); a catalogue no larger is scored whole.
    batch_size, learning_rate, weight_decay
        Adam on mini-batches of ``batch_size`` users' sequences.
    recent_share
        Share of each batch drawn from the users active since the last training round
        (the rest uniformly from all users), so a round learns what is happening now.
    seed
        Seeds the weights, dropout and the batch sampling.
    threads
        torch CPU threads for training and queries (keep it below the cores the workers need).
    """

    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    negatives: int = 1024
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    recent_share: float = 0.75
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("max_len", "dim", "blocks", "heads", "negatives", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"sequence model {name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"sequence model dim {self.dim} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"sequence model dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.recent_share <= 1.0:
            raise ValueError(f"sequence model recent_share must be in [0, 1], got {self.recent_share}")
        if not self.learning_rate >= 0.0:
            raise ValueError(f"sequence model learning_rate must be >= 0, got {self.learning_rate}")


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
