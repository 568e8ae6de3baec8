"""Measure how far the `ci` numbers move under runs that should not change them, and derive the
regression tolerances from it (`make tolerances` -> tests/baselines/tolerances.json).

Each variant re-runs the ci profile of the experiments in a fresh process:
- numerically equivalent runs: oneDNN's kernels limited to AVX2 (its dispatch differs between
  CPU generations), XLA's code generation limited to AVX2, the project's CPU tunings off. They
  change only the order and width of floating-point reductions, as another host or a jaxlib
  patch release does;
- with `--other-jax DIR`, another patch release of jax/jaxlib (`pip install --target DIR --no-deps
  jax==X jaxlib==X`), put first on the path: the same program, compiled by another XLA;
- other seeds (1 and 2 added to each seed): once rounding has changed a training's trajectory,
  the run is a draw from the same distribution as another seed's, so the seed spread is the
  envelope a chaotic number can reach on another host.

Tolerance of a metric (absolute, in its own unit):
- bit-stable (no equivalent variant moves any number of the experiment): the floor of its kind
  (tests/test_regression.py: FLOOR), which covers a jaxlib release moving a few test examples;
- otherwise: max(floor, 1.5 x the largest deviation from the baseline over all variants).
A metric the baseline does not hold, or a variant does not produce, keeps the floor. Run on
another host, a metric keeps the larger of the tolerance recorded and the one measured there
(while its baseline is the same): the spreads of all hosts measured add up.

Usage: python tests/baselines/measure_variability.py [EXPERIMENT ...] (default: all).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

OUT = HERE / "tolerances.json"
DOC = REPO / "docs" / "regression.md"
TABLE_BEGIN, TABLE_END = "<!-- tolerances table: written by measure_variability.py -->", "<!-- end of table -->"
MARGIN = 1.5

# name -> (extra environment, seed offset); "default" is the baseline's own run.
VARIANTS: dict[str, tuple[dict[str, str], int]] = {
    "default": ({}, 0),
    "onednn_avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, 0),
    "xla_avx2": ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}, 0),
    "cpu_tuning_off": ({"FGSM_REPRO_CPU_TUNING": "0"}, 0),
    "seed+1": ({}, 1),
    "seed+2": ({}, 2),
}
EQUIVALENT = ["onednn_avx2", "xla_avx2", "cpu_tuning_off"]

# One fresh process per variant: the environment is read when JAX starts.
_RUN = """
import json, sys
from pathlib import Path
from fgsm_repro.runtime import Runtime
Runtime.from_env(compilation_cache=False).apply()
from fgsm_repro.experiments.common import Context
from fgsm_repro.experiments.runner import run_config
out, configs = Path(sys.argv[1]), sys.argv[2:]
ctx = Context(results_dir=out / "results", runs_dir=out / "runs", show_progress=False)
for config in configs:
    path = run_config(Path(config), "ci", ctx)
    print(json.dumps({"config": Path(config).stem, "result": str(path)}), flush=True)
"""


def _seed_shifted_configs(configs: dict[str, Path], offset: int, folder: Path) -> dict[str, Path]:
    """Copies of every config (reused trainings are found beside them) with the ci seeds shifted."""
    import yaml

    from fgsm_repro.config import load_config

    folder.mkdir(parents=True)
    for path in (REPO / "configs").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    for name in configs:
        seeds = [s + offset for s in load_config(REPO / "configs" / f"{name}.yaml", "ci").seeds]
        raw = yaml.safe_load((folder / f"{name}.yaml").read_text())
        raw.setdefault("profiles", {}).setdefault("ci", {})["seeds"] = seeds
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {name: folder / f"{name}.yaml" for name in configs}


def _flat(measured: dict) -> dict[str, float | bool]:
    """claim/metric -> value, for the numbers and verdicts the regression test compares."""
    from tests.regression import compared_metric

    return {f"{claim}/{metric}": value for claim, metrics in measured.items() for metric, value in metrics.items()
            if compared_metric(metric, value)}


def other_jax_variant(folder: Path) -> str:
    """Register the variant that runs with the jax/jaxlib installed in `folder` (first on the path)."""
    from importlib.metadata import distributions

    versions = {d.metadata["Name"]: d.version for d in distributions(path=[str(folder)])}
    if "jaxlib" not in versions:
        sys.exit(f"--other-jax {folder}: no jaxlib installed there (pip install --target {folder} --no-deps ...)")
    name = f"jaxlib_{versions['jaxlib']}"
    VARIANTS[name] = ({"PYTHONPATH": os.pathsep.join(filter(None, [str(folder.resolve()),
                                                                   os.environ.get("PYTHONPATH")]))}, 0)
    EQUIVALENT.append(name)
    return name


def _shown_env(name: str) -> dict[str, str]:
    """A variant's environment as recorded (not this machine's folders)."""
    env = dict(VARIANTS[name][0])
    if name.startswith("jaxlib_"):
        env["PYTHONPATH"] = f"a folder holding jax and jaxlib {name.removeprefix('jaxlib_')} (pip install --target)"
    return env


def run_variant(name: str, configs: dict[str, Path], scratch: Path) -> dict[str, dict]:
    env_extra, offset = VARIANTS[name]
    work = scratch / name
    if offset:
        configs = _seed_shifted_configs(configs, offset, work / "configs")
    env = {**os.environ, **env_extra}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUN, str(work), *map(str, configs.values())], env=env,
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            done = json.loads(line)
            found[done["config"]] = _flat(json.loads(Path(done["result"]).read_text())["measured"])
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return found


def _tolerance(key: str, base: float, values: dict) -> float:
    """The tolerance of a number whose experiment moves: max(floor, MARGIN x its largest deviation)."""
    from tests.regression import floor

    deviation = max((abs(x - base) for x in values.values() if x is not None), default=0.0)
    return max(floor(key.split("/", 1)[1]), round(MARGIN * deviation + 1e-9, 2))


def derive(baselines: dict[str, dict], runs: dict[str, dict[str, dict]], measured_on: dict) -> dict:
    from tests.regression import floor

    experiments = {}
    for exp, recorded in baselines.items():
        values = {variant: runs[variant].get(exp, {}) for variant in runs}
        stable = all(values[v].get(k) == recorded[k] for v in EQUIVALENT if v in values for k in recorded)
        metrics = {}
        for key, base in recorded.items():
            if isinstance(base, bool):
                metrics[key] = {"baseline": base, "values": {v: values[v].get(key) for v in values}}
                continue
            seen = {v: values[v].get(key) for v in values}
            deviation = max((abs(x - base) for x in seen.values() if x is not None), default=0.0)
            tol = _tolerance(key, base, seen) if not stable else floor(key.split("/", 1)[1])
            metrics[key] = {"baseline": base, "values": seen, "max_deviation": round(deviation, 4), "tolerance": tol}
        experiments[exp] = {"bit_stable_under_equivalent_runs": stable, "measured_on": measured_on, "metrics": metrics}
    return experiments


def _widened(fresh: dict, previous: dict) -> dict:
    """Measurements add up (another host, another jaxlib, more variants): while a metric's baseline
    is the same, it keeps every variant's value and the larger of its old and new tolerance, and
    the entry lists every host measured."""
    for exp, entry in fresh.items():
        old = previous.get(exp)
        if not old:
            continue
        now = entry["metrics"]
        same = {k: m for k, m in old["metrics"].items() if m.get("baseline") == now.get(k, {}).get("baseline")}
        for key, m in entry["metrics"].items():
            if key not in same:
                continue
            m["values"] = {**same[key]["values"], **m["values"]}
            if "tolerance" in m and "tolerance" in same[key]:
                m["tolerance"] = max(m["tolerance"], same[key]["tolerance"])
                m["max_deviation"] = max(m["max_deviation"], same[key]["max_deviation"])
        stable = entry["bit_stable_under_equivalent_runs"] and (old["bit_stable_under_equivalent_runs"] or not same)
        if not stable:  # moves now: every variant's deviation counts, the earlier seeds' too
            for key, m in now.items():
                if "tolerance" in m:
                    m["tolerance"] = max(m["tolerance"], _tolerance(key, m["baseline"], m["values"]))
        entry["bit_stable_under_equivalent_runs"] = stable
        if same:
            earlier = old.get("measured_elsewhere", []) + [old["measured_on"]]
            entry["measured_elsewhere"] = [h for h in earlier if h != entry["measured_on"]]
    return fresh


def main() -> None:
    from fgsm_repro.config import experiment_configs
    from fgsm_repro.results import device_info, versions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="*")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--other-jax", type=Path, help="a folder holding another jax/jaxlib release: adds its variant")
    args = parser.parse_args()
    variants = args.variants.split(",") + ([other_jax_variant(args.other_jax)] if args.other_jax else [])
    configs = {n: p for n, p in experiment_configs().items() if not args.experiments or n in args.experiments}
    baselines = {n: _flat(json.loads((HERE / f"{n}.ci.json").read_text())["measured"]) for n in configs}
    with tempfile.TemporaryDirectory(prefix="fgsm-variability-") as scratch:
        runs = {v: run_variant(v, configs, Path(scratch)) for v in variants if v}
    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    measured_on = {"device": device_info(), "versions": versions(), "variants": list(runs),
                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record = {
        "about": "Regression tolerances of the ci baselines, derived from measured variability by "
                 "tests/baselines/measure_variability.py (its docstring states the rule).",
        "margin": MARGIN,
        "variants": {**previous.get("variants", {}),
                     **{v: {"env": _shown_env(v), "seed_offset": VARIANTS[v][1]} for v in VARIANTS}},
        "equivalent_variants": sorted(set(previous.get("equivalent_variants", [])) | set(EQUIVALENT)),
        "experiments": {**previous.get("experiments", {}),
                        **_widened(derive(baselines, runs, measured_on), previous.get("experiments", {}))},
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"tolerances -> {OUT}", file=sys.stderr)
    write_table(record)


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(record: dict) -> str:
    """Every compared number: its baseline, its value in each variant, and the tolerance derived."""
    variants = list(record["variants"])
    lines = ["| experiment | number | baseline | " + " | ".join(variants) + " | tolerance |",
             "|---|---|---|" + "---|" * len(variants) + "---|"]
    for exp, entry in sorted(record["experiments"].items()):
        tag = "" if entry["bit_stable_under_equivalent_runs"] else " (moves)"
        for key, m in entry["metrics"].items():
            if "tolerance" not in m:
                continue
            values = " | ".join(_fmt(m["values"].get(v)) for v in variants)
            lines.append(f"| {exp}{tag} | {key} | {_fmt(m['baseline'])} | {values} | ±{m['tolerance']:g} |")
    return "\n".join(lines)


def write_table(record: dict) -> None:
    """Replace the table in docs/regression.md (between its markers) with the measured one."""
    text = DOC.read_text()
    head, _, rest = text.partition(TABLE_BEGIN)
    _, _, tail = rest.partition(TABLE_END)
    DOC.write_text(f"{head}{TABLE_BEGIN}\n{markdown_table(record)}\n{TABLE_END}{tail}")
    print(f"table -> {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
