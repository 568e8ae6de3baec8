"""Config hashes: what a result or a checkpoint was made by, independent of prose and layout.

A results file records its config's hash, a checkpoint its training's: when the hash of today's
config differs, the result is stale or the checkpoint is not resumed. Prose (description,
deviations, notes) and fields left at their defaults are not hashed, so rewording a note or adding
an option with a default leaves every hash unchanged.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fgsm_repro.config.schema import ExperimentConfig

PROSE = {"name", "description", "deviations", "profile_note", "skip"}
# Prose, and how the work is laid out on the machine (same results up to float rounding).
NOT_HASHED = {**dict.fromkeys(PROSE, True), "seeds_together": True,
              "train": {"data_parallel": True, "validate_every": True}}


def config_hash(cfg: ExperimentConfig) -> str:
    """sha256 of the resolved config (after the profile merge), first 16 hex digits, of what it
    runs (:data:`NOT_HASHED` left out). An attack's name is always hashed (each attack's own name
    is its default)."""
    dump = cfg.model_dump(mode="json", exclude_defaults=True, exclude=NOT_HASHED)
    dump["attack"] = {"name": cfg.attack.name, **dump.get("attack", {})}
    return digest(dump)


def training_hash(cfg: ExperimentConfig, training: str | None = None, point: dict[str, Any] | None = None) -> str:
    """Hash of what determines the trained parameters of `training` at grid `point` (data, model,
    train): checkpoints stay valid when only prose, the attack or other trainings change."""
    one = cfg.model_copy(update={"model": cfg.model_of(training), "models": {},
                                 "train": cfg.train_of(training, point)})
    return digest(one.model_dump(mode="json", include={"data", "model", "train"}, exclude_defaults=True,
                                 exclude={"train": {"data_parallel", "validate_every"}}))


def digest(obj) -> str:
    """The first 16 hex digits of the sha256 of `obj` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
