"""Cached block inputs and outputs that respect a memory budget: RAM first, disk past it.

Reconstruction samples random minibatches from the calibration set's activations at a block, many
thousands of times, so they are cached rather than recomputed. Rows arrive in chunks (one per forward
batch); a chunk is kept in RAM while the shared byte budget lasts, otherwise it is written to a temporary
folder with ``torch.save`` and read back with ``torch.load(weights_only=True, mmap=True)``, so a minibatch
touches only the pages of the rows it uses.
"""

from __future__ import annotations

from pathlib import Path

import torch


class ByteBudget:
    """Bytes of RAM that all caches of one block may still use."""

    def __init__(self, megabytes: float) -> None:
        self.left = int(megabytes * 2**20)

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit; False means the caller must spill to disk."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


class TensorCache:
    """Rows of one activation tensor, appended in chunks, gathered by row index."""

    def __init__(self, budget: ByteBudget, folder: Path, name: str) -> None:
        self.budget, self.folder, self.name = budget, Path(folder), name
        self.chunks: list[torch.Tensor] = []
        self.starts: list[int] = []
        self.spilled = 0  # chunks on disk

    def __len__(self) -> int:
        return self.starts[-1] + len(self.chunks[-1]) if self.chunks else 0

    def append(self, rows: torch.Tensor) -> None:
        """Add a chunk of rows (copied to CPU; spilled to disk when the budget is spent)."""
        rows = rows.detach().to("cpu", copy=True).contiguous()
        self.starts.append(len(self))
        if not self.budget.take(rows.numel() * rows.element_size()):
            path = self.folder / f"{self.name}_{len(self.chunks)}.pt"
            torch.save(rows, path)
            rows = torch.load(path, weights_only=True, mmap=True)
            self.spilled += 1
        self.chunks.append(rows)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` (a 1-D integer tensor), in that order."""
        if self.chunks and not self.spilled and len(self.chunks) > 1:  # all in RAM: one tensor, one gather
            self.chunks, self.starts = [torch.cat(self.chunks)], [0]
        if len(self.chunks) == 1:
            return self.chunks[0][idx]
        starts = torch.tensor(self.starts)
        which = torch.bucketize(idx, starts, right=True) - 1
        out = torch.empty((len(idx), *self.chunks[0].shape[1:]), dtype=self.chunks[0].dtype)
        for c in which.unique().tolist():
            sel = which == c
            out[sel] = self.chunks[c][idx[sel] - self.starts[c]]
        return out
