"""Results files: measured values plus the provenance that says where they came from.

``results/<experiment>.<profile>.json`` holds, per claim ID, the measured values (percent),
the experiment's extra tables, its figures, its protocol deviations, and the provenance:
git commit, config and its hash, dataset name + checksum + lossy flag, seeds, device,
library versions, wall time and profile.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, NamedTuple, NotRequired, Required

import jax
from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12 on

from fgsm_repro import cpu_tuning, files
from fgsm_repro.config import PROFILES, ExperimentConfig, experiment_configs, load_config, migrate_legacy
from fgsm_repro.data import DatasetInfo
from fgsm_repro.errors import ReproError, field_problem
from fgsm_repro.reference import TARGETS
from fgsm_repro.trainings import reused_training_hashes

# The code's own checkout: its git state is the provenance of the code that ran. Files are read and
# written in the workdir (fgsm_repro.workdir), never here: results/ in the workdir, and the ci-profile
# numbers the regression tests compare a fresh ci run with in its tests/baselines/ (written only when
# asked: `fgsm-repro reproduce --profile ci --update-baselines`, `make baselines`).
REPO_ROOT = Path(__file__).resolve().parent.parent


def results_folder(results_dir: str | Path | None = None) -> Path:
    """`results_dir`, or by default the workdir's results/ (:mod:`fgsm_repro.workdir`)."""
    from fgsm_repro import workdir

    return Path(results_dir) if results_dir else workdir.results_dir()


class DatasetRecord(TypedDict, total=False):
    """:meth:`fgsm_repro.data.DatasetInfo.as_dict`."""

    name: Required[str]
    version: Required[str]
    sha256: Required[str]
    lossy: bool
    source: Required[str]
    label: Required[str]


class DeviceRecord(TypedDict, total=False):
    """:func:`device_info` (what the report shows of it)."""

    platform: Required[str]
    cpu: Required[str]
    cpu_count: Required[int | None]


class Provenance(TypedDict, total=False):
    """:func:`provenance`."""

    git_commit: Required[str]
    git_dirty: bool | None
    config_file: Required[str]
    config_hash: Required[str]
    reused_training_hashes: dict[str, str]
    config: dict[str, Any]
    profile: Required[Literal[PROFILES]]
    dataset: Required[DatasetRecord]
    seeds: Required[list[int]]
    device: Required[DeviceRecord]
    versions: dict[str, str | None]
    wall_time_s: Required[float]
    finished_at: Required[str]


@with_config(strict=True)
class SweepRange(TypedDict):
    """How far a sweep of unstated settings moved one measured number (experiments.common.swept_range)."""

    setting: str  # what was swept, in words
    low: float
    high: float
    points: int
    kind: NotRequired[Literal["setting", "seed"]]  # settings the paper leaves open, or seeds of one recipe


@with_config(strict=True)
class Sample(TypedDict, total=False):
    """How many examples one run's rate or mean is of, and a mean's standard deviation (percent)."""

    n: Required[int]
    sd: float


# Strict: what reads a record (the report, `reproduce --stale`) takes its types as given; a "5" where
# a number belongs would end it in a traceback.
@with_config(strict=True)
class ResultRecord(TypedDict, total=False):
    """One results file, ``results/<config>.<profile>.json``: what the runner writes and the report
    reads. Its types are checked on reading (:func:`scan_results`)."""

    name: Required[str]  # the config's name
    experiment: str
    description: str
    claims: Required[list[str]]
    measured: Required[dict[str, dict[str, Any]]]  # claim ID -> metric -> value (mean over seeds)
    ci95: dict[str, dict[str, float]]  # claim ID -> metric -> 95% half-width (several seeds)
    # claim ID -> metric -> the sample of one run's rate ({"n"}) or mean ({"n", "sd"}): fgsm_repro.sampling
    samples: dict[str, dict[str, Sample]]
    per_seed: dict[str, dict[str, dict[str, Any]]]  # seed -> claim ID -> metric -> value
    tables: dict[str, list[dict[str, Any]]]
    figures: dict[str, str]  # claim ID -> path relative to results/
    deviations: list[str]
    profile_note: str
    notes: list[str]
    # claim ID -> metric -> {setting, low, high, points}: how far a sweep of unstated settings moved it
    sensitivity: dict[str, dict[str, SweepRange]]
    provenance: Required[Provenance]
    _file: str  # set on reading: the file's name


_RECORD = TypeAdapter(ResultRecord)
# The values the report compares with the paper: numbers (finite or not, no bools, no int past a
# float's range), and the holds/does not hold of qualitative claims.
_NUMBER = TypeAdapter(float | None, config=ConfigDict(strict=True))
_COMPARED = {**{(t.claim, t.metric): _NUMBER for t in TARGETS if t.paper is not None},
             **{(t.claim, "holds"): TypeAdapter(bool | None, config=ConfigDict(strict=True))
                for t in TARGETS if t.kind == "qualitative"}}


def _problem(adapter: TypeAdapter, value: Any, where: tuple = ()) -> str | None:
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        problem = field_problem(e)
        field = ".".join(str(k) for k in (*where, *problem.loc))
        return " ".join(f"field '{field[:100]}': {problem.msg}".split())  # a key in the file may hold a newline
    return None


def record_problem(record: dict) -> str | None:
    """Why `record` is not a results record the report can read (one line), or None: a field missing
    or of another type than :class:`ResultRecord` says, or a value compared with the paper no number."""
    problem = _problem(_RECORD, record)
    for (claim, metric), adapter in _COMPARED.items():
        problem = problem or _problem(adapter, record["measured"].get(claim, {}).get(metric),
                                      ("measured", claim, metric))
    return problem


def git_state(cwd: Path = REPO_ROOT) -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    # Results files change as runs finish; they do not make the code that produced them dirty.
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"git_commit": commit or "unknown", "git_dirty": bool(status) if status is not None else None}


# The vector ISA extensions that decide which kernels XLA and oneDNN pick (and so the rounding).
_ISA_PREFIXES = ("sse4", "avx", "fma", "f16c", "amx")


def cpu_info() -> dict:
    """The host CPU as /proc/cpuinfo names it: model, vendor, family/model/stepping and the vector
    ISA flags. Floating-point results of training differ in the last bits between CPU generations."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if fields:
                    break  # the first processor's block is enough
                continue
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    isa = sorted(f for f in fields.get("flags", "").split() if f.startswith(_ISA_PREFIXES))
    return {"model_name": fields.get("model name") or platform.processor() or platform.machine(),
            "vendor": fields.get("vendor_id"), "family": fields.get("cpu family"), "model": fields.get("model"),
            "stepping": fields.get("stepping"), "isa": isa}


def describe_cpu(info: dict | None) -> str:
    """One line naming a recorded CPU (`cpu_info` or the older plain model name)."""
    if not info:
        return "an unrecorded CPU"
    if isinstance(info, str):
        return info
    isa = info.get("isa") or []
    widest = "AVX-512" if any(f.startswith("avx512") for f in isa) else "AVX2" if "avx2" in isa else "no AVX2"
    return (f"{info.get('model_name')} ({info.get('vendor')}, family {info.get('family')} model {info.get('model')}, "
            f"{widest})")


def device_info() -> dict:
    dev = jax.devices()[0]
    cpu = cpu_info()
    import os

    return {"platform": dev.platform, "device_kind": dev.device_kind, "device_count": jax.device_count(),
            "process_count": jax.process_count(), "cpu": cpu["model_name"], "cpu_info": cpu,
            "cpu_count": os.cpu_count(), "cpu_tuning": cpu_tuning.applied()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("fgsm-repro", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def provenance(cfg: ExperimentConfig, config_file: str | Path | None, dataset: DatasetInfo, wall_time_s: float,
               git: dict) -> dict:
    """`git` is :func:`git_state` taken when the run started (the code that ran)."""
    return {
        **git,
        "config_file": _shown_path(config_file),
        "config_hash": cfg.hash(),
        # What the trainings reused from other configs train (their recipes are not in config_hash).
        "reused_training_hashes": reused_training_hashes(cfg),
        "config": cfg.model_dump(mode="json"),
        "profile": cfg.profile,
        "dataset": dataset.as_dict(),
        "seeds": list(cfg.seeds),
        "device": device_info(),
        "versions": versions(),
        "wall_time_s": round(wall_time_s, 2),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _shown_path(config_file: str | Path | None) -> str:
    """A config's path relative to the workdir when it is inside it (configs/t1_softmax.yaml)."""
    from fgsm_repro import workdir

    found = workdir.current(required=False)
    path = Path(config_file).resolve() if config_file else None
    if found is not None and path is not None and path.is_relative_to(found.root):
        return str(path.relative_to(found.root))
    return str(config_file)


def result_path(name: str, profile: str, results_dir: Path | None = None) -> Path:
    """results/<config name>.<profile>.json"""
    return results_folder(results_dir) / f"{name}.{profile}.json"


def write_json(record: dict[str, Any], path: Path) -> Path:
    """Write `record` to `path` atomically (:func:`fgsm_repro.files.write_atomic`): never a
    half-written results file. Of several processes, only the first writes
    (:func:`fgsm_repro.processes.writes_files`)."""
    from fgsm_repro.processes import writes_files

    if not writes_files():
        return path
    return files.write_json(path, record)


def record_baseline(result_file: Path, baselines_dir: Path | None = None) -> Path:
    """Copy a ci-profile results file into the regression baselines (default: the workdir's
    tests/baselines/)."""
    from fgsm_repro import workdir

    folder = Path(baselines_dir or workdir.baselines_dir())
    return files.write_atomic(folder / Path(result_file).name, Path(result_file).read_bytes())


def write_result(record: ResultRecord, results_dir: Path | None = None) -> Path:
    return write_json(record, result_path(record["name"], record["provenance"]["profile"], results_dir))


class ResultsScan(NamedTuple):
    records: list[ResultRecord]
    unreadable: list[str]  # "<file>: <why>", for every results file that could not be read


def scan_results(results_dir: Path | None = None) -> ResultsScan:
    """The results files of `results_dir`, and the ones that cannot be read (reported, never
    skipped in silence), those of a shape the report cannot read among them (:func:`record_problem`).
    JSON files that are not results (bench.json: no measured values, not named <name>.<profile>.json)
    are left to their readers."""
    records, unreadable = [], []
    for path in sorted(results_folder(results_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            json.dumps(record, ensure_ascii=False).encode()  # a lone surrogate ("\ud800") could not be written out
        except (OSError, ValueError, RecursionError) as e:  # RecursionError: arrays nested thousands deep
            unreadable.append(f"{path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if not isinstance(record, dict):
            unreadable.append(f"{path.name}: not a JSON object")
            continue
        if "measured" not in record and path.name.split(".")[-2] not in PROFILES:
            continue
        record.setdefault("name", record.get("experiment"))
        problem = record_problem(record)
        if problem:
            unreadable.append(f"{path.name}: not a results record: {problem}")
            continue
        record["_file"] = path.name
        records.append(record)
    return ResultsScan(records, unreadable)


def read_results(results_dir: Path | None = None) -> list[ResultRecord]:
    return scan_results(results_dir).records


def _recorded_config(record: ResultRecord) -> Path | None:
    """The config file `record` was run from when it is not one of the project's configs/ (a config
    given by its path: `fgsm-repro reproduce path/to/my_exp.yaml`), where it recorded it (absolute,
    or relative to the workdir); None when there is none."""
    from fgsm_repro import workdir

    recorded = record.get("provenance", {}).get("config_file")
    found = workdir.current(required=False)
    if not isinstance(recorded, str) or not recorded.endswith((".yaml", ".yml")):
        return None
    path = Path(recorded) if Path(recorded).is_absolute() else found.root / recorded if found else None
    if path is None or (found and path.resolve().parent == found.configs.resolve()):
        return None  # a project config: found by its name in configs/, or gone
    return path if path.is_file() and path.stem == (record.get("name") or record.get("experiment")) else None


def _config_file(record: ResultRecord, config_dir: Path | None) -> Path | None:
    """Today's config file of `record`'s name: in `config_dir` (default: the workdir's configs/),
    else where a config given by its path was recorded."""
    configs = experiment_configs(config_dir) if config_dir else experiment_configs()
    return configs.get(record.get("name") or record.get("experiment")) or _recorded_config(record)


def _current_config(record: ResultRecord, config_dir: Path | None) -> tuple[str | None, str | None]:
    """(the hash of today's config of `record`'s name and profile, None), or (None, why there is none)."""
    name = record.get("name") or record.get("experiment")
    path = _config_file(record, config_dir)
    if path is None:
        return None, f"its config {name}.yaml is gone (deleted or renamed)"
    try:
        return load_config(path, record["provenance"]["profile"]).hash(), None
    except ReproError as e:
        return None, f"its config no longer loads: {' '.join(str(e).split())}"


def current_config_hash(record: ResultRecord, config_dir: Path | None = None) -> str | None:
    """The hash of today's config of `record`'s name and profile; None when it is gone or does not load."""
    return _current_config(record, config_dir)[0]


def config_gone(record: ResultRecord, config_dir: Path | None = None) -> bool:
    """Whether no config of `record`'s name is left (deleted or renamed): nothing can re-run it."""
    return _config_file(record, config_dir) is None


def _reused_trainings_changed(record: ResultRecord, config_dir: Path | None) -> bool:
    """Whether a training the record's config reuses from another config trains differently today
    (records without the field, written before it existed, are taken as unchanged)."""
    recorded = record["provenance"].get("reused_training_hashes")
    if not recorded:
        return False
    path = _config_file(record, config_dir)
    try:
        return path is None or reused_training_hashes(load_config(path, record["provenance"]["profile"])) != recorded
    except (ReproError, KeyError):
        return True


def config_changed(record: ResultRecord, config_dir: Path | None = None) -> bool | None:
    """Whether the config that produced `record` differs from today's config of the same name and
    profile in anything hashed (what runs); None when today's config is gone or does not load.
    A record written in the earlier config format is compared through
    :func:`fgsm_repro.config.migrate_legacy`."""
    prov, name = record["provenance"], record.get("name") or record.get("experiment")
    current = current_config_hash(record, config_dir)
    if current is None:
        return None
    if prov.get("config_hash") == current:
        return _reused_trainings_changed(record, config_dir)
    try:
        recorded = ExperimentConfig.model_validate(migrate_legacy({**prov["config"], "name": name}))
    except Exception:  # a format this code no longer reads
        return True
    return recorded.hash() != current


def prepared_dataset_sha256(name: str, data_dir: Path | None = None) -> str | None:
    """The content checksum of dataset `name` as prepared in `data_dir` (default: TFDS's); None
    when it is not prepared there (nothing to compare with)."""
    from fgsm_repro.data.store import dataset_dir, default_data_dir, read_provenance

    try:
        return read_provenance(dataset_dir(name, Path(data_dir or default_data_dir()))).get("content_sha256")
    except (OSError, ValueError, KeyError, ReproError):  # ReproError: a dataset this code does not know
        return None


def stale_reason(record: ResultRecord, config_dir: Path | None = None, data_dir: Path | None = None) -> str | None:
    """Why `record` no longer stands for what its config runs today, or None: its config is gone
    or no longer loads, or changed in what it runs (:func:`config_changed`), or the dataset
    prepared here has another checksum than the one it was measured on."""
    changed = config_changed(record, config_dir)
    if changed is None:  # nothing today runs what these numbers measured
        return _current_config(record, config_dir)[1]
    if changed:
        return "its config has changed since"
    recorded = record["provenance"].get("dataset", {})
    current = prepared_dataset_sha256(recorded.get("name", ""), data_dir) if recorded.get("name") else None
    if current and recorded.get("sha256") not in (None, "unknown") and current != recorded["sha256"]:
        return f"the {recorded['name']} prepared here (sha256 {current[:12]}…) is not the data it was measured on"
    return None
