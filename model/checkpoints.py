"""Resumable checkpoints of a stage, and the write-then-rename that makes every output directory
appear whole or not at all.

A resumable checkpoint (``stage{N}/checkpoints/step-NNNNNN/``) holds what a stage needs to go on
as if never interrupted: the weights and processor, the optimizer and scheduler, every rank's RNG
and mixture position (each rank's is its own, so resuming needs the same world size), and the
checkpoint the stage started from. ``latest`` names the newest. Directories are written under a
temporary name and renamed into place (:func:`tmp_dir`, :func:`publish`), so a kill leaves no
half-written checkpoint that looks finished; the loop uses the same pair for ``init`` and
``final``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from manifests.atomic import write_bytes, write_json
from model.build import save_checkpoint
from model.distributed import Dist
from model.stream import Stream


def rng_state() -> dict:
    """This process's Python, torch and (when there is one) CUDA random states."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tmp_dir(path: Path) -> Path:
    """A hidden sibling of ``path``, unique to this process, to write ``path`` into first."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished directory into place (replacing an older one of the same name)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def save_resumable(
    d: Dist,
    stage_dir: Path,
    step: int,
    module,
    processor,
    optimizer,
    scheduler,
    stream: Stream,
    keep: int,
    start: str = "",
) -> Path | None:
    """A resumable checkpoint of ``step``: rank 0 writes the weights, optimizer and scheduler
    (identical on every rank) and every rank's mixture position and RNG state, into a temporary
    directory renamed into place; then ``latest`` points at it and older ones go."""
    mixture = d.gather(stream.state_dict())
    rng = d.gather(rng_state())
    path = None
    if d.main:
        ckpts = stage_dir / "checkpoints"
        path = ckpts / f"step-{step:06d}"
        tmp = tmp_dir(path)
        save_checkpoint(module, processor, tmp)
        trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save({**trainer, "rng": rng}, tmp / "trainer_state.pt")
        state = {"step": step, "world_size": d.world, "mixture": mixture, "start": start}
        write_json(tmp / "state.json", state)
        publish(tmp, path)
        write_bytes(ckpts / "latest", path.name.encode())
        for old in sorted(ckpts.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return path


def latest_checkpoint(stage_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names, if it is complete (has its ``state.json``)."""
    pointer = stage_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def checkpoint_start(path: Path) -> str:
    """The checkpoint the stage of resumable checkpoint ``path`` started from."""
    return json.loads((path / "state.json").read_text()).get("start", "")


def load_trainer_state(path: Path, d: Dist, optimizer, scheduler, stream: Stream) -> int:
    """Restore optimizer, scheduler, this rank's RNG and mixture position; return the step."""
    state = json.loads((path / "state.json").read_text())
    if state["world_size"] != d.world:
        raise ValueError(
            f"{path} was written by {state['world_size']} ranks, this run has {d.world}: resume "
            "with the same number of processes (each rank's mixture position is its own)"
        )
    trainer = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    set_rng_state(trainer["rng"][d.rank])
    stream.load_state_dict(state["mixture"][d.rank])
    return int(state["step"])


__all__ = [
    "checkpoint_start",
    "latest_checkpoint",
    "load_trainer_state",
    "publish",
    "rng_state",
    "save_resumable",
    "set_rng_state",
    "tmp_dir",
]
