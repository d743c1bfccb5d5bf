"""A pilot: the build run for real on the first partitions of every raw input, so that
``--plan`` can price a build that has never run.

    vl3data build my_build.yaml --plan --pilot 2          # 2 partitions of each raw source

The pilot is the same build config with ``paths.out`` moved to ``OUT/.pilot``, every curate and
video job cut to ``input.max_partitions: N`` and every training stage to a few steps. It runs as
an ordinary build there (its own state, markers and fingerprints, so a second ``--pilot`` reruns
nothing unless something changed) and never touches the real outputs: every output and the state
must lie under ``paths.out``, or the pilot refuses to start. The plan then takes each node's rate
from the real build's last run when there is one, else from the pilot's.

A pilot's rates are per item over a small run, a first estimate: fixed costs (Ray start-up,
model loading in ``setup()``) weigh more than at scale, and a pilot's small mixtures can make a
training step lighter than the real one; the more partitions, the closer. Nodes downstream of a
failed pilot node have no rate ("?").
"""

from __future__ import annotations

from pathlib import Path

from manifests.configs import ConfigError, load_config
from vl3data.builder.config import BuildConfig

PILOT_DIR = ".pilot"
PILOT_STEPS = 3  # training steps per stage in a pilot: enough for a rate past the first step


def pilot_config(
    config: str | list[str], overrides: list[str], partitions: int, steps: int = PILOT_STEPS
) -> BuildConfig:
    """The pilot of the build ``config`` (with ``overrides``): see the module docs."""
    if partitions < 1:
        raise ConfigError("--pilot", f"{partitions} partitions: give at least 1")
    base = load_config(BuildConfig, config, overrides)
    if "out" not in base.paths:
        raise ConfigError(
            "paths.out",
            "a pilot writes under ${out}/" + PILOT_DIR + ", and this build has no paths.out",
            "add paths: {out: ...} and write every output under ${out}",
        )
    root = Path(base.paths["out"]).expanduser().resolve() / PILOT_DIR
    cfg = load_config(BuildConfig, config, [*overrides, f"paths.out={root}"])
    if cfg.curate:
        cfg.curate.set.append(f"input.max_partitions={partitions}")
    for v in [*cfg.videos, *cfg.imports]:
        v.set.append(f"input.max_partitions={partitions}")
    if cfg.train:
        cfg.train.set += [f"stage{n}.steps={steps}" for n in cfg.train.stages]
    _check_contained(cfg, root)
    return cfg


def _check_contained(cfg: BuildConfig, root: Path) -> None:
    """Every output and the state under ``root``: a pilot must never write over the real build."""
    from vl3data.builder.graph import make_graph

    places = {"state": cfg.state}
    for node in make_graph(cfg):
        for out in node.outputs:
            places[f"{node.name} output"] = out
    for what, path in places.items():
        p = Path(path).expanduser().resolve()
        if p != root and root not in p.parents:
            raise ConfigError(
                what,
                f"{p} is not under paths.out, so a pilot would write into the real build",
                "write every output and the state under ${out}",
            )


__all__ = ["PILOT_DIR", "PILOT_STEPS", "pilot_config"]
