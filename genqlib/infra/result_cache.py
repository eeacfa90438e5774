"""One content-addressed cache for every expensive step: filter views, BN inversions, style tokens, PTQ and
QAT runs.

An entry's key is its serialised config plus the digests of its inputs (``digest`` of the teacher, the images,
the evaluation set); the key's hash names the file, so the same key finds the same file and anything that
changes the result changes the name. Every write is atomic (``atomic_path``): a stopped job leaves the old
entry or the new one, never half of one. ``Checkpoint`` is the one resume mechanism for steps that run long
enough to be interrupted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genqlib.infra.atomic import atomic_path

HASH_CHARS = 12  # of the key's SHA-256 in an entry's file name


def digest(*parts: torch.Tensor | nn.Module | str | dict | list) -> str:
    """SHA-256 (hex) of tensors (shape, dtype and bytes), modules (their state dicts, names included) and
    JSON-serialisable values, in order: the one fingerprint every cache key is built from."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, nn.Module):
            for name, value in part.state_dict().items():
                h.update(name.encode())
                h.update(digest(value).encode())
        elif isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


def make_key(config: dict, **inputs: str) -> dict:
    """A cache key: ``config`` (settings, as JSON) and the digests of the inputs by name, compared as stored
    (tuples become lists)."""
    return json.loads(json.dumps({"config": config, **inputs}))


def entry_path(folder: str | Path, label: str, key: dict, suffix: str = ".json") -> Path:
    """``folder/<label>-<hash of key><suffix>``: ``label`` is for people, the hash for identity."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:HASH_CHARS]
    return Path(folder) / f"{label}-{name}{suffix}"


def read_json(path: Path, key: dict) -> dict | None:
    """The result stored at ``path`` for ``key``; None when there is none or it was stored for another key."""
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored["result"] if stored.get("key") == key else None


def write_json(path: Path, key: dict, result: dict) -> None:
    """Store ``result`` under ``key`` at ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": key, "result": result}, indent=1) + "\n")


def cached_json(folder: str | Path, label: str, key: dict, compute: Callable[[], dict]) -> dict:
    """``compute()``'s result, stored under ``folder``; a later call with the same key reads it back. The
    returned dict says ``from_cache`` (not stored)."""
    key = json.loads(json.dumps(key))
    path = entry_path(folder, label, key)
    stored = read_json(path, key)
    if stored is not None:
        return {**stored, "from_cache": True}
    result = compute()
    write_json(path, key, result)
    return {**result, "from_cache": False}


def cached_tensors(
    folder: str | Path,
    label: str,
    key: dict,
    compute: Callable[[], tuple[dict[str, torch.Tensor], dict]],
) -> tuple[dict[str, torch.Tensor], dict, bool]:
    """(tensors, metadata, from_cache) of ``compute()``, stored as one safetensors file with the key and the
    JSON metadata inside it; the same key reads the file back."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    key = json.loads(json.dumps(key))
    path = entry_path(folder, label, key, ".safetensors")
    if path.exists():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if json.loads(meta.get("key", "null")) == key:
            return load_file(str(path)), json.loads(meta["meta"]), True
    tensors, meta = compute()
    with atomic_path(path) as tmp:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"key": json.dumps(key), "meta": json.dumps(meta)},
        )
    return tensors, meta, False


class Checkpoint:
    """A resumable step's saved state: ``save`` writes it atomically with the step's key, ``load`` returns it
    only for the same key (another run's state raises rather than being resumed or overwritten)."""

    def __init__(self, path: str | Path, key: dict):
        self.path, self.key = Path(path), json.loads(json.dumps(key))

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as tmp:
            torch.save({**state, "key": self.key}, tmp)

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, weights_only=True)
        if state.get("key") != self.key:
            old = state.get("key") or {}
            diff = sorted(k for k in set(old) | set(self.key) if old.get(k) != self.key.get(k))
            raise ValueError(
                f"{self.path} is the checkpoint of another run (differs in {diff}); delete it to start over"
            )
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
