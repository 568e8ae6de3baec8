"""Kill tests: a run interrupted by SIGKILL at any point loses nothing.

`fgsm-repro train` and `fgsm-repro reproduce` run as subprocesses, watched through the files they
write (the run folder polled every half millisecond) and killed with SIGKILL the moment a chosen
point is reached: before the first checkpoint, between two checkpoints, while orbax writes a
checkpoint, while ``final/`` and ``run.json`` are written, while the results file and the report are
written (the renames of those three small files slowed by a launcher, tests/toys/slow_renames.py,
so that no host's fast disk hides their moment). After each kill the state on disk is checked to
be the one aimed at (a kill point that is not observed fails the test, it never passes in silence)
and to hold no half-written file; the same command run again must then finish with bitwise the
same parameters, or the same measured numbers and report, as a run that was never interrupted.

The processes run without JAX's persistent compilation cache: a kill must not land in the writes of
the shared cache in ~/.cache (nor may these tests depend on it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.mnist]

# A maxout network on 3,000 images, 8 epochs of a fraction of a second, a checkpoint after each.
TOY = REPO / "tests" / "toys" / "kill_maxout.yaml"
EPOCHS = 8
CLAIM, RESULTS_NAME, PROFILE = "T1.softmax", "t1_softmax.ci", "ci"  # the cheapest claim
ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax writes <step>.orbax-checkpoint-tmp[-<time>], then renames it
POLL_S = 0.0005
# Writing run.json, a results JSON or REPORT.md takes microseconds on a fast disk: the CLI runs
# through a launcher that pauses before each of those files is renamed into place (the project's
# write code unchanged), so that the watcher sees the kill point on every host.
SLOW_RENAMES = REPO / "tests" / "toys" / "slow_renames.py"
TIMEOUT_S = 300


# --------------------------------------------------------------------------------------
# running, watching and killing the CLI
# --------------------------------------------------------------------------------------

def _env(data_dir: Path) -> dict[str, str]:
    drop = ("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "JAX_ENABLE_COMPILATION_CACHE", "FGSM_REPRO_DISTRIBUTED",
            "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | {"TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", "FGSM_REPRO_JAX_CACHE": "off",
                  "TFDS_DATA_DIR": str(data_dir), "FGSM_REPRO_TEST_RENAME_DELAY_S": "0.3",
                  "FGSM_REPRO_TEST_SLOW_RENAMES": f"run.json,{RESULTS_NAME}.json,REPORT.md"}


def _cli(*args: str) -> list[str]:
    """The CLI, with the renames of the small files these tests kill inside slowed (SLOW_RENAMES)."""
    return [sys.executable, str(SLOW_RENAMES), *args]


def _names(folder: Path) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if not n.endswith(".lock")]  # not the run folders' lock files
    except OSError:
        return []


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no output)"


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _finish(proc: subprocess.Popen, log: Path, what: str) -> None:
    try:
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{_tail(log)}"


def _complete(argv: list[str], env: dict, log: Path, what: str) -> None:
    _finish(_start(argv, env, log), log, what)


@dataclass
class Kill:
    point: str
    seen: str | None = None  # what the watcher saw when it killed
    state: str | None = None  # the state on disk after the kill that shows the point was hit
    at_s: float | None = None  # seconds after the start
    attempts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def hit(self) -> bool:
        return self.state is not None


def _kill_when(argv: list[str], env: dict, log: Path, reached: Callable[[], str | None]) -> tuple[str | None, float]:
    """Run `argv`, polling `reached()` every POLL_S; SIGKILL the process the moment it returns a
    description. Returns (that description, seconds) — (None, seconds) when the process finished
    on its own first. A process that fails on its own fails the test."""
    proc = _start(argv, env, log)
    start = time.monotonic()
    try:
        while proc.poll() is None:
            seen = reached()
            if seen:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if proc.returncode == -signal.SIGKILL:
                    return seen, time.monotonic() - start
                break  # it finished in the meantime
            if time.monotonic() - start > TIMEOUT_S:
                raise AssertionError(f"{' '.join(argv)} ran {TIMEOUT_S} s without reaching its kill point")
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{' '.join(argv)} failed (exit {proc.returncode}):\n{_tail(log)}"
    return None, time.monotonic() - start


def _kill_at(kill: Kill, argv: list[str], env: dict, log: Path, reached: Callable[[], str | None],
             confirm: Callable[[], str | None]) -> None:
    """One attempt at `kill`: run until `reached`, SIGKILL, and record the state `confirm()` finds
    (None: the process was killed elsewhere, or finished before the point)."""
    kill.attempts += 1
    seen, seconds = _kill_when(argv, env, log, reached)
    kill.seen, kill.at_s = seen, round(seconds, 2)
    kill.state = confirm() if seen else None


# --------------------------------------------------------------------------------------
# what the folders hold
# --------------------------------------------------------------------------------------

def _steps(folder: Path) -> tuple[list[int], list[str]]:
    """The finalized orbax steps in a checkpoint folder, and the names of the ones being written."""
    names = _names(folder)
    return sorted(int(n) for n in names if n.isdigit()), sorted(n for n in names if ORBAX_TMP in n)


def _tmp_step(name: str) -> int:
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def _debris(folder: Path) -> list[str]:
    """Leftovers of interrupted writes under `folder`: temporary files and orbax's temporary or
    staged folders."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or ORBAX_TMP in p.name or p.name.endswith(".partial"))


def _half_written(results_dir: Path) -> list[str]:
    """Results files that do not parse and a REPORT.md that is not complete."""
    problems = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            json.loads(path.read_text())
        except ValueError as e:
            problems.append(f"{path.name} does not parse ({e})")
    report = results_dir / "REPORT.md"
    if report.exists() and (problem := _report_problem(report.read_text())):
        problems.append(f"REPORT.md: {problem}")
    return problems


def _report_problem(text: str) -> str | None:
    """What is wrong with a REPORT.md (None: it is complete, from its title to the last section)."""
    if not text.startswith("# fgsm-repro: measured results beside the paper\n"):
        return "does not start with the report's title"
    _, section, rest = text.rpartition("\n## Not measured yet\n\n")
    if not section:
        return "has no '## Not measured yet' section"
    if not rest.endswith("\n") or rest.count("\n") != 1 or not rest.strip():
        return f"its last section is not one complete line: {rest[-200:]!r}"
    return None


def _params(run_dir: Path):
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore((run_dir / "final").resolve())


def _params_differ(params, reference) -> list[str]:
    import jax

    ours, theirs = (dict(jax.tree_util.tree_leaves_with_path(p)) for p in (params, reference))
    if ours.keys() != theirs.keys():
        return [f"parameter tree {sorted(map(jax.tree_util.keystr, ours))} != "
                f"{sorted(map(jax.tree_util.keystr, theirs))}"]
    out = []
    for path, leaf in ours.items():
        a, b = np.asarray(leaf), np.asarray(theirs[path])
        if a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{jax.tree_util.keystr(path)}: {a.dtype}{a.shape} != {b.dtype}{b.shape}")
        elif not np.array_equal(a, b):
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            out.append(f"{jax.tree_util.keystr(path)}: {int((diff > 0).sum())} values differ, up to {diff.max():.3g}")
    return out


RECORD_NUMBERS = ("epochs_run", "best_epoch", "val_error", "test_error", "training_hash", "config_hash")


# --------------------------------------------------------------------------------------
# fgsm-repro train
# --------------------------------------------------------------------------------------

def _train_points(run_dir: Path) -> dict[str, tuple[Callable[[], str | None], Callable[[], str | None]]]:
    """Kill point -> (reached, confirm) for a training into `run_dir`."""
    ckpts, record = run_dir / "checkpoints", run_dir / "run.json"

    def unfinished(state: str) -> str | None:
        return None if record.exists() else state

    def before_first():
        if ckpts.is_dir() and not _names(ckpts):
            return "checkpoints/ created, still empty"
        return None

    def before_first_state():
        steps, tmps = _steps(ckpts)
        return unfinished("no checkpoint written") if not steps and not tmps else None

    def between():
        steps, tmps = _steps(ckpts)
        if steps and steps[-1] >= 3 and not tmps:
            return f"checkpoints {steps} written, none being written"
        return None

    def between_state():
        steps, tmps = _steps(ckpts)
        return unfinished(f"checkpoints {steps}") if steps and steps[-1] < EPOCHS and not tmps else None

    def writing():
        _, tmps = _steps(ckpts)
        if tmps := [t for t in tmps if _tmp_step(t) >= 2]:
            return f"checkpoints/{tmps[0]} appeared"
        return None

    def writing_state():
        steps, tmps = _steps(ckpts)
        return unfinished(f"checkpoints {steps} and {tmps} half-written") if tmps else None

    def final():
        if partial := [n for n in _names(run_dir) if n.startswith("final.partial")]:
            return f"{partial[0]} appeared"
        return None

    def final_state():
        partial = sorted(n for n in _names(run_dir) if n.startswith("final."))
        return unfinished(f"{partial} left, final/ {'present' if (run_dir / 'final').exists() else 'absent'}"
                          ) if partial else None

    def record_written():
        if tmp := [n for n in _names(run_dir) if n.startswith((".run.json", "run.json.")) and n != "run.json"]:
            return f"{tmp[0]} appeared"
        return None

    def record_state():
        tmp = [n for n in _names(run_dir) if n.startswith((".run.json", "run.json.")) and n != "run.json"]
        return unfinished(f"final/ in place, {tmp} half-written") if tmp and (run_dir / "final").is_dir() else None

    return {"before the first checkpoint": (before_first, before_first_state),
            "between checkpoints (mid-epoch)": (between, between_state),
            "during an orbax checkpoint write": (writing, writing_state),
            "while final/ is written": (final, final_state),
            "while run.json is written": (record_written, record_state)}


@pytest.fixture(scope="module")
def train_kills(tmp_path_factory, mnist_data_dir):
    root = tmp_path_factory.mktemp("kill-train")
    env = _env(mnist_data_dir)

    def argv(run_dir: Path) -> list[str]:
        return _cli("train", str(TOY), "--profile", PROFILE, "--run-dir", str(run_dir), "--data-dir",
                    str(mnist_data_dir), "-q")

    start = time.monotonic()
    # The uninterrupted reference trains beside the first kills (two cores).
    reference_log = root / "reference.log"
    reference = _start(argv(root / "reference"), env, reference_log)
    kills, runs = [], {}
    try:
        for point in _train_points(root / "x"):
            kill = Kill(point)
            for attempt in range(3):  # a narrow window may be missed; each attempt in a fresh folder
                run_dir = root / f"{len(kills)}-{attempt}"
                reached, confirm = _train_points(run_dir)[point]
                _kill_at(kill, argv(run_dir), env, root / f"{run_dir.name}.log", reached, confirm)
                if kill.hit:
                    break
            kills.append(kill)
            if kill.hit:  # the same command again, to the end
                _complete(argv(run_dir), env, root / f"{run_dir.name}.log", f"train after a kill {point}")
                runs[point] = run_dir
    except BaseException:
        reference.kill()
        reference.wait()
        raise
    _finish(reference, reference_log, "the uninterrupted reference training")

    ref_params = _params(root / "reference")
    ref_record = json.loads((root / "reference" / "run.json").read_text())
    for kill in kills:
        if kill.point not in runs:
            continue
        run_dir = runs[kill.point]
        kill.problems += [f"parameters: {p}" for p in _params_differ(_params(run_dir), ref_params)]
        record = json.loads((run_dir / "run.json").read_text())
        kill.problems += [f"run.json {k}: {record.get(k)!r} != {ref_record.get(k)!r} uninterrupted"
                          for k in RECORD_NUMBERS if record.get(k) != ref_record.get(k)]
    return kills, runs, root, round(time.monotonic() - start, 1)


def _all_kill_points_hit(command: str, kills, seconds) -> list:
    """Print what each kill saw and left; fail when a kill point was never observed."""
    for k in kills:
        print(f"{command} kill {k.point}: {'HIT' if k.hit else 'MISSED'} after {k.at_s} s ({k.attempts} attempt(s)); "
              f"saw {k.seen}; left {k.state}")
    hit = [k for k in kills if k.hit]
    print(f"{command} kill points hit: {len(hit)}/{len(kills)} ({seconds} s)")
    missed = [f"{k.point} (last attempt saw {k.seen!r})" for k in kills if not k.hit]
    assert not missed, ("kill points never observed — the process finished or was killed elsewhere: "
                        + "; ".join(missed))
    return hit


def test_a_killed_training_resumes_to_bitwise_the_same_parameters(train_kills):
    kills, _, _, seconds = train_kills
    hit = _all_kill_points_hit("train", kills, seconds)
    wrong = [f"{k.point}: {p}" for k in kills for p in k.problems]
    assert not wrong, "after the rerun, not the uninterrupted run's result:\n" + "\n".join(wrong)
    assert len(hit) >= 4


# --------------------------------------------------------------------------------------
# fgsm-repro reproduce
# --------------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, int]:
    out = {}
    for name in _names(folder):
        try:
            out[name] = os.stat(folder / name).st_ino
        except OSError:
            pass
    return out


def _new_entries(folder: Path, before: dict[str, int], part: str) -> list[str]:
    """Entries of `folder` with `part` in their name that are new (or replaced) since `before`."""
    now = _snapshot(folder)
    return sorted(n for n, ino in now.items() if part in n and before.get(n) != ino)


@pytest.fixture(scope="module")
def reproduce_kills(tmp_path_factory, mnist_data_dir):
    """One results dir and runs dir, the reproduction killed at one point after the other (each
    run resuming what the killed one left), then run to the end."""
    root = tmp_path_factory.mktemp("kill-reproduce")
    env = _env(mnist_data_dir)
    results, runs = root / "results", root / "runs"
    trainings = runs / RESULTS_NAME  # <config>.<profile>/seed<N>-<training>/: the checkpoint folders

    def argv(results_dir: Path, runs_dir: Path) -> list[str]:
        return _cli("reproduce", CLAIM, "--profile", PROFILE, "--results-dir", str(results_dir), "--runs-dir",
                    str(runs_dir), "--data-dir", str(mnist_data_dir), "-q")

    def checkpoints() -> tuple[list[int], list[str]]:
        steps, tmps = [], []
        for name in _names(trainings):
            s, t = _steps(trainings / name)
            steps, tmps = steps + s, tmps + [f"{name}/{n}" for n in t]
        return steps, tmps

    def training():
        folders = _names(trainings)
        return f"{folders[0]}/ created, still empty" if folders and not any(
            _names(trainings / f) for f in folders) else None

    def training_state():
        steps, tmps = checkpoints()
        return "no checkpoint, no results" if not steps and not tmps and not _names(results) else None

    def writing():
        return f"{checkpoints()[1][0]} appeared" if checkpoints()[1] else None

    def writing_state():
        steps, tmps = checkpoints()
        return f"{tmps} half-written" if tmps and not steps else None

    def trained():
        steps, tmps = checkpoints()
        return f"checkpoint {steps} written, no results yet" if steps and not tmps and not _names(results) else None

    def trained_state():
        steps, tmps = checkpoints()
        return f"checkpoint {steps}, no results" if steps and not tmps and not _names(results) else None

    def new(part: str):
        before = _snapshot(results)

        def reached():
            entries = _new_entries(results, before, part)
            return f"{entries} appeared" if entries else None

        def state():  # killed inside the write: its temporary file is there
            tmp = [n for n in _new_entries(results, before, part) if n.endswith(".tmp")]
            return f"{tmp} half-written; results dir {sorted(_names(results))}" if tmp else None

        return reached, state

    start = time.monotonic()
    reference_log = root / "reference.log"
    reference = _start(argv(root / "reference-results", root / "reference-runs"), env, reference_log)
    log = root / "killed.log"
    kills = []
    try:
        for point, how, attempts in (("during training, before its checkpoint", lambda: (training, training_state), 1),
                                     ("during an orbax checkpoint write", lambda: (writing, writing_state), 1),
                                     ("after the checkpoint, before the results", lambda: (trained, trained_state), 1),
                                     ("while the results JSON is written", lambda: new(f"{RESULTS_NAME}.json"), 3),
                                     ("while REPORT.md is written", lambda: new("REPORT.md"), 3)):
            kill = Kill(point)
            while kill.attempts < attempts and not kill.hit:  # a missed narrow window: again, same folders
                reached, confirm = how()
                _kill_at(kill, argv(results, runs), env, log, reached, confirm)
            kill.problems += _half_written(results)
            kills.append(kill)
        _complete(argv(results, runs), env, log, "reproduce after the kills")
    except BaseException:
        reference.kill()
        reference.wait()
        raise
    _finish(reference, reference_log, "the uninterrupted reference reproduction")
    return kills, results, root / "reference-results", round(time.monotonic() - start, 1)


def _without_provenance_line(report: str) -> list[str]:
    return [line for line in report.splitlines() if not line.startswith("Provenance: ")]


def test_a_killed_reproduction_finishes_with_the_same_numbers_and_report(reproduce_kills):
    kills, results, reference, seconds = reproduce_kills
    _all_kill_points_hit("reproduce", kills, seconds)
    broken = [f"after the kill {k.point}: {p}" for k in kills for p in k.problems]
    assert not broken, "a killed run left half-written files:\n" + "\n".join(broken)

    assert not _half_written(results), _half_written(results)
    jsons = sorted(p.name for p in results.glob("*.json"))
    assert jsons == sorted(p.name for p in reference.glob("*.json")) == [f"{RESULTS_NAME}.json"]
    ours, theirs = (json.loads((d / f"{RESULTS_NAME}.json").read_text()) for d in (results, reference))
    for key in sorted(set(ours) | set(theirs)):
        if key != "provenance":
            assert ours.get(key) == theirs.get(key), f"{key}: {ours.get(key)} != {theirs.get(key)} uninterrupted"
    for key in ("config_hash", "config", "dataset", "seeds", "profile"):
        assert ours["provenance"][key] == theirs["provenance"][key], key

    report = (results / "REPORT.md").read_text()
    assert _report_problem(report) is None, _report_problem(report)
    assert f"### {RESULTS_NAME.split('.')[0]} — `ci` profile" in report
    assert f"{CLAIM} (ci smoke run only)" in report.rpartition("\n## Not measured yet\n\n")[2]
    # The same report as the uninterrupted run's, but for where and when it ran.
    assert _without_provenance_line(report) == _without_provenance_line((reference / "REPORT.md").read_text())


# --------------------------------------------------------------------------------------
# leftovers
# --------------------------------------------------------------------------------------

def test_no_temporary_files_are_left_after_the_reruns(train_kills, reproduce_kills):
    _, train_runs, _, _ = train_kills
    _, results, _, _ = reproduce_kills
    leftovers = {f"train ({point})": _debris(run_dir) for point, run_dir in train_runs.items()}
    leftovers["reproduce results dir"] = _debris(results)
    leftovers = {where: names for where, names in leftovers.items() if names}
    print(f"leftovers after the reruns: {leftovers or 'none'}")
    assert not leftovers, f"temporary files and folders left after the successful reruns: {leftovers}"
