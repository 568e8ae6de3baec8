"""Loading a config: YAML with unique keys, `inherit:`, the profile's overrides, one-line errors.

A config file describes one experiment with the paper's protocol (the `paper` profile) and,
under ``profiles:``, the overrides that make the `fast` (CPU-feasible) and `ci` (minutes)
reductions. Loading merges the chosen profile into the base, validates the result
(:mod:`fgsm_repro.config.schema`) and returns an :class:`ExperimentConfig`. Every problem
becomes a one-line :class:`ReproError` naming the file and the field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fgsm_repro.config.schema import PROFILES, ExperimentConfig, deep_merge
from fgsm_repro.errors import ReproError, field_problem


def migrate_legacy(raw: dict[str, Any]) -> dict[str, Any]:
    """A config in the earlier format, where `select`, `sensitivity`, `adversarial_training` and
    `variants` named what to train, in today's `trainings` (results files record their configs in
    the format of their day; the report compares them with today's configs through this)."""
    raw = copy.deepcopy(raw)
    select, sensitivity = raw.pop("select", None), raw.pop("sensitivity", None)
    adversarial, variants = raw.pop("adversarial_training", None), raw.pop("variants", None)
    trainings = {}
    if select or (sensitivity and sensitivity.get("epochs")):
        trainings["model"] = {"grid": {"weight_decay": select["weight_decay"]}} if select else {}
    if sensitivity and sensitivity.get("epochs"):
        grid = {"weight_decay": sensitivity["weight_decay"]} if sensitivity.get("weight_decay") else {}
        trainings["sensitivity"] = {"grid": grid, "choose": "all", "measure_epochs": sensitivity["epochs"]}
    if adversarial and raw.get("experiment") == "t2_maxout240":  # the one experiment that read it; others inherited it
        trainings |= {"naive": {}, "adversarial": {"train": {"adversarial": adversarial}}}
    trainings |= {name: {"train": override} for name, override in (variants or {}).items()}
    if trainings:
        raw["trainings"] = trainings
    return raw


def _format_validation_error(path: Path, err: ValidationError) -> str:
    problem = field_problem(err)
    field = ".".join(str(p) for p in problem.loc) or "(top level)"
    more = f" (and {problem.count - 1} more)" if problem.count > 1 else ""
    return f"{path}: field '{field}': {problem.msg}{problem.got}{more}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last,
    so a repeated `train:` would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own error says so
                    break
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str | Path) -> Any:
    """YAML `text` (from `source`, named in errors) with unique keys; one-line :class:`ReproError`."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ReproError(f"{source}: invalid YAML{where}: {' '.join(str(problem).split())}") from None
    except (ValueError, OverflowError, RecursionError) as e:  # e.g. a timestamp out of range
        raise ReproError(f"{source}: invalid YAML: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ReproError(f"{path}: config file not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ReproError(f"{path}: cannot read the config ({e.strerror or type(e).__name__})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReproError(f"{path}: not a UTF-8 text file (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "a config is YAML text") from None
    raw = parse_yaml(text, path)
    if not isinstance(raw, dict):
        raise ReproError(f"{path}: expected a mapping of config keys at the top level")
    return raw


def read_config_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """`path`'s YAML, merged over the file named by its `inherit:` key (a path relative to it),
    so experiments that share a recipe state it once. Lists and scalars are replaced."""
    raw = read_yaml(path)
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in seen:
        raise ReproError(f"{path}: field 'inherit': circular inheritance through {parent_path.name}")
    base = read_config_tree(parent_path, (*seen, path.resolve()))
    base.pop("trainings", None)  # trainings belong to the file that declares them (in its profiles too)
    for overrides in (base.get("profiles") or {}).values():
        if isinstance(overrides, dict):
            overrides.pop("trainings", None)
    return deep_merge(base, raw)


def load_config(path: str | Path, profile: str = "paper", **overrides: Any) -> ExperimentConfig:
    """Load `path` (and what it inherits), apply `profile`'s overrides (then `overrides`), validate."""
    path = Path(path)
    if profile not in PROFILES:
        raise ReproError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    raw = read_config_tree(path)
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ReproError(f"{path}: field 'profiles': expected a mapping of profile name to overrides")
    unknown = [p for p in profiles if p not in PROFILES or p == "paper"]
    if unknown:
        raise ReproError(
            f"{path}: field 'profiles.{unknown[0]}': unknown profile (overrides exist for 'fast' and "
            "'ci'; the base config is the 'paper' profile)"
        )
    merged = raw
    if profile != "paper":
        override = profiles.get(profile)
        if override is None:
            raise ReproError(f"{path}: profile {profile!r} is not defined under 'profiles'")
        if not isinstance(override, dict):
            raise ReproError(f"{path}: field 'profiles.{profile}': expected a mapping of overrides")
        merged = deep_merge(raw, override)
    merged = deep_merge(merged, overrides)
    merged["profile"] = profile
    merged["name"] = path.stem
    try:
        cfg = ExperimentConfig.model_validate(merged, context={"folders": [path.resolve().parent]})
    except ValidationError as e:
        raise ReproError(_format_validation_error(path, e)) from None
    cfg._folder = path.resolve().parent
    return cfg


def train_overrides(data_parallel: bool | None) -> dict[str, Any]:
    """`load_config` overrides from the command line's ``--data-parallel/--one-device`` (None: the
    config's own setting)."""
    return {} if data_parallel is None else {"train": {"data_parallel": data_parallel}}


def experiment_configs(config_dir: Path | None = None) -> dict[str, Path]:
    """The experiment config files in `config_dir` (name -> path); by default the workdir's
    ``configs/`` (:mod:`fgsm_repro.workdir`), none outside a project folder."""
    from fgsm_repro import workdir

    if config_dir is None:
        found = workdir.current(required=False)
        if found is None:
            return {}
        config_dir = found.configs
    return {p.stem: p for p in sorted(Path(config_dir).glob("*.yaml"))}
