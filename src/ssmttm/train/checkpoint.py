"""Training checkpoints as folders: `step-NNNNNNN/{model.safetensors, config.json, trainer_state.pt}`.

Lightning saves and loads checkpoints through a `CheckpointIO` plugin; `StepFolderIO` is ours, so Lightning's own
machinery (global step, optimizer, LR scheduler, loop progress, callback states) does the bookkeeping while the
files follow docs/ARTIFACTS.md:

- `model.safetensors` + `config.json`: the LM weights and resolved config, exactly what `models.lm.save_lm` writes,
  so `models.lm.load_lm(step_dir)` (generation) reads a training checkpoint directly.
- `trainer_state.pt`: everything else of Lightning's checkpoint dict (optimizer and scheduler states, loop
  progress, callback states holding RNG states and the data position). Plain tensors and containers only: it is
  read with `torch.load(weights_only=True)`, never unpickling code. Its bytes depend only on the state's values
  (`save_canonical`), so a run resumed from a checkpoint writes the files of an uninterrupted run and the DVC hash
  of results/train_lm does not record whether training was interrupted.

A folder is written under a temporary name and renamed into place (`artifacts.atomic_dir`), so a run killed while
saving leaves the previous checkpoint as the latest complete one; older ones are pruned only after the new one is in
place (`prune_checkpoints`). A folder without `trainer_state.pt` holds weights only: generation reads it, resuming
never does.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from ssmttm.artifacts import atomic_dir, is_temporary
from ssmttm.config import canonical_json
from ssmttm.errors import UserFacingError
from ssmttm.models.lm import CHECKPOINT_FORMAT, CONFIG_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.pt"
STEP_RE = re.compile(r"^step-(\d{7})$")
MODEL_PREFIX = "model."  # the LM is the `model` attribute of the LightningModule


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (WEIGHTS_FILE, CONFIG_FILE, TRAINER_STATE_FILE))


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete `step-NNNNNNN` folders of a run, oldest first (temporaries of killed saves are ignored)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = []
    for child in out_dir.iterdir():
        match = STEP_RE.match(child.name)
        if match and child.is_dir() and not is_temporary(child) and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1][1] if checkpoints else None


def prune_checkpoints(out_dir: str | Path, keep_last: int | None, keep_weights_at: Iterable[int] = ()) -> list[Path]:
    """Keep the `keep_last` newest full checkpoints (None keeps all); returns the folders deleted.

    An older checkpoint whose step is in `keep_weights_at` is not deleted but loses its trainer state (optimizer
    moments: two thirds of an AdamW checkpoint): its weights and config stay for `ssmttm generate`, and it is no
    longer a full checkpoint, so resuming only ever starts from one of the newest. The file is removed in one unlink,
    so a kill at any moment leaves a folder that is either full or weights-only.
    """
    if keep_last is None:
        return []
    milestones = set(keep_weights_at)
    removed = []
    for step, folder in list_checkpoints(out_dir)[:-keep_last]:
        if step in milestones:
            (folder / TRAINER_STATE_FILE).unlink()
            log.info("kept the weights of %s (optimizer state removed)", folder.name)
        else:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed


def sync_to_disk(*paths: Path) -> None:
    """fsync files and folders. A rename is atomic but not durable: after a node crash the newest checkpoint could
    be named yet hold unwritten pages, while the older one it replaced was already pruned."""
    for path in paths:
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        except OSError:
            if not path.is_dir():
                raise
            log.debug("%s: this file system cannot sync a folder; its files are synced", path)
        finally:
            os.close(handle)


# ----------------------------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python RNG states as tensors and plain containers."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------- canonical bytes


class _MemoFreePickler(pickle.Pickler):
    """A pickler without a memo ("fast" mode): every object is written in full where it occurs.

    With a memo, an object met twice is written once and referenced after; which strings and containers are the
    same object differs between a process that built its state and one that loaded it from a checkpoint (Lightning
    keeps some loaded dicts), so equal states pickled to different bytes. Checkpoint states are trees (no cycles),
    which is what fast mode requires; tensors sharing a storage are still stored once (torch's persistent ids).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fast = True


# torch.save takes a `pickle_module` and uses only its Pickler class to write the data.
_MEMO_FREE_PICKLE = types.SimpleNamespace(Pickler=_MemoFreePickler, __name__="ssmttm_memo_free_pickle")


def _fresh_tree(value: Any) -> Any:
    """The same values in fresh containers and fresh contiguous CPU tensors: no storage shared between tensors,
    no views into larger storages, whatever the optimizer or a checkpoint load left in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True).contiguous()
    if isinstance(value, dict):
        return type(value)((key, _fresh_tree(item)) for key, item in value.items())
    if isinstance(value, list):
        return [_fresh_tree(item) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_fresh_tree(item) for item in value)
    return value


def save_canonical(state: dict[str, Any], path: Path) -> None:
    """torch.save whose bytes depend only on the values of `state` (tensors, containers, numbers, strings)."""
    torch.save(_fresh_tree(state), path, pickle_module=_MEMO_FREE_PICKLE)


# ----------------------------------------------------------------------------------------------- Lightning plugin


class StepFolderIO(CheckpointIO):
    """Lightning CheckpointIO writing and reading `step-NNNNNNN/` folders.

    `config` is what goes into config.json beside the weights: {"lm": resolved LMConfig dict, "text": text section,
    ...}; the step is added on save.
    """

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        if "state_dict" not in checkpoint:
            # Bare weights: ddp_spawn hands rank 0's weights back to the launching process this way.
            save_file({k: v.detach().contiguous().cpu() for k, v in checkpoint.items()}, str(path))
            return
        state = dict(checkpoint)
        full_state = state.pop("state_dict")
        weights = {k.removeprefix(MODEL_PREFIX): v.detach().contiguous().cpu() for k, v in full_state.items()}
        if any(not k.startswith(MODEL_PREFIX) for k in full_state):
            raise ValueError("StepFolderIO expects every parameter under the LightningModule's `model` attribute")
        config = {"format": CHECKPOINT_FORMAT, **self.config, "step": int(state.get("global_step", 0))}
        with atomic_dir(path) as tmp:
            save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT})
            (tmp / CONFIG_FILE).write_text(canonical_json(config) + "\n")
            save_canonical(state, tmp / TRAINER_STATE_FILE)
            sync_to_disk(*(tmp / name for name in (WEIGHTS_FILE, CONFIG_FILE, TRAINER_STATE_FILE)))
        sync_to_disk(path.parent)  # the rename: pruning may delete the previous checkpoint next
        log.info("checkpoint %s", path)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        path = Path(path)
        if path.is_file() and path.name != TRAINER_STATE_FILE:  # bare weights (see save_checkpoint)
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return load_training_checkpoint(path)

    def remove_checkpoint(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A step folder (or its trainer_state.pt) -> Lightning's checkpoint dict, weights included. Never unpickles."""
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.name == TRAINER_STATE_FILE:
        folder = folder.parent
    if not is_complete(folder):
        raise UserFacingError(
            f"checkpoint {folder} is incomplete or missing ({WEIGHTS_FILE}, {CONFIG_FILE} and "
            f"{TRAINER_STATE_FILE} expected); delete it to resume from an earlier one, or train "
            "from scratch without --resume"
        )
    state = torch.load(folder / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
    weights = load_file(str(folder / WEIGHTS_FILE), device="cpu")
    state["state_dict"] = {MODEL_PREFIX + k: v for k, v in weights.items()}
    return state
