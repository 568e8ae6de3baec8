"""Experiment configs: YAML files validated by pydantic, with `paper` / `fast` / `ci` profiles.

- :mod:`~fgsm_repro.config.schema`: the sections of a config, as pydantic models;
- :mod:`~fgsm_repro.config.load`: reading a YAML (inheritance, profiles) into a validated config;
- :mod:`~fgsm_repro.config.hashing`: the hashes of what a config runs and trains;
- :mod:`~fgsm_repro.config.models`: the options of each built-in model kind.
"""

from fgsm_repro.attacks.base import AttackSpec
from fgsm_repro.config.load import (
    experiment_configs,
    load_config,
    migrate_legacy,
    parse_yaml,
    read_config_tree,
    read_yaml,
    train_overrides,
)
from fgsm_repro.config.schema import (
    OWN_CLAIM,
    PROFILES,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    RunRef,
    TrainConfig,
    TrainingConfig,
    deep_merge,
    point_tag,
)

__all__ = ["OWN_CLAIM", "PROFILES", "AttackSpec", "DataConfig", "ExperimentConfig", "ModelConfig", "RunRef",
           "TrainConfig", "TrainingConfig", "deep_merge", "experiment_configs", "load_config", "migrate_legacy",
           "parse_yaml", "point_tag", "read_config_tree", "read_yaml", "train_overrides"]
