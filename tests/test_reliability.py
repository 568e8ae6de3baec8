"""Reliability: every bad input refused in one line before any work, every write atomic and
race-free, unreadable and stale results reported, Ctrl-C says how to resume.

The guarantees and the tests that prove them are listed in docs/guarantees.md.
"""

import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from fgsm_repro import cli, files
from fgsm_repro.config import experiment_configs, load_config
from fgsm_repro.errors import ReproError
from fgsm_repro.models import MODELS
from fgsm_repro.results import read_results, scan_results, stale_reason
from tests.helpers import run_cli

T2 = REPO / "configs" / "t2_maxout240.yaml"
CONV = REPO / "configs" / "t1_convmaxout.yaml"
MPDBM = REPO / "configs" / "s9_mpdbm.yaml"


def _config(tmp_path: Path, text: str, name: str = "bad.yaml", base: Path = T2) -> Path:
    path = tmp_path / name
    path.write_text(f"inherit: {base}\n{text}" if base else text)
    return path


# --- validation is total ---------------------------------------------------------------------------

BAD_MODEL_CONFIGS = [
    ("model: {options: {units: -5}}", "field 'model.options.units'"),
    ("model: {options: {units: abc}}", "field 'model.options.units'"),
    ("model: {options: {units: 240.5}}", "field 'model.options.units'"),
    ("model: {options: {pieces: 0}}", "field 'model.options.pieces'"),
    ("model: {options: {layers: 0}}", "field 'model.options.layers'"),
    ("model: {options: {hidden_keep: 0}}", "field 'model.options.hidden_keep'"),
    ("model: {options: {input_keep: 2.0}}", "field 'model.options.input_keep'"),
    ("model: {options: {weight_init: -1}}", "field 'model.options.weight_init'"),
    ("model: {options: {weight_init: .inf}}", "field 'model.options.weight_init'"),
    ("model: {options: {units: 99999999999}}", "field 'model.options.units'"),
    ("model: {options: {unitz: 3}}", "field 'model.options.unitz': unknown option"),
    ("model: {options: {num_classes: 1}}", "field 'model.options.num_classes'"),
    ("seeds: [1.0e+23]", "field 'seeds.0'"),
    ("seeds: [4294967296]", "field 'seeds.0'"),
    ("seeds: [-1]", "field 'seeds.0'"),
    ("train: {epochs: 99999999999}", "field 'train.epochs'"),
    ("train: {epochs: 1}\ntrain: {epochs: 2}", "duplicate key 'train'"),
    ("train: {epochs: 1, epochs: 2}", "duplicate key 'epochs'"),
]


@pytest.mark.parametrize("text, message", BAD_MODEL_CONFIGS)
def test_bad_values_are_refused_in_one_line_naming_file_and_field(tmp_path, text, message):
    path = _config(tmp_path, text + "\n")
    with pytest.raises(ReproError) as err:
        load_config(path, "paper")
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("base, text, message", [
    (CONV, "model: {options: {channels: [96, 192]}}", "one entry per conv layer"),
    (CONV, "model: {options: {pools: [[4, 2], [4, 0], [2, 2]]}}", "field 'model.options.pools.1.1'"),
    (CONV, "model: {options: {pads: [4, -3, 3]}}", "field 'model.options.pads.1'"),
    (MPDBM, "model: {options: {steps: 1}}", "field 'model.options.steps'"),
    (MPDBM, "model: {options: {units: [500]}}", "field 'model.options.units.1'"),
    (MPDBM, "model: {options: {sparse_init: [15, 0, 23]}}", "field 'model.options.sparse_init.1'"),
    (MPDBM, "model: {options: {hidden_bias_init: [-0.7]}}", "one value per hidden layer"),
    (MPDBM, "model: {options: {classifier: gibbs}}", "field 'model.options.classifier'"),
])
def test_conv_maxout_and_mpdbm_options_are_checked(tmp_path, base, text, message):
    with pytest.raises(ReproError, match=message.replace(".", r"\.")):
        load_config(_config(tmp_path, text + "\n", base=base), "paper")


def test_non_utf8_and_binary_configs_are_refused(tmp_path):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(ReproError, match="not a UTF-8 text file"):
        load_config(path)
    path.write_bytes(b"experiment: t1_softmax\nclaims: [T1.softmax]\x00\x01")
    with pytest.raises(ReproError, match="invalid YAML"):
        load_config(path)


def test_every_option_of_every_built_in_model_is_checked():
    """Each registered model kind has an options model, and it names exactly the module's fields."""
    for name, spec in MODELS.items():
        fields = {f.name for f in dataclasses.fields(spec.module) if f.name not in ("parent", "name", "dot_general")}
        assert spec.options is not None and set(spec.options.model_fields) == fields, name


def test_checking_model_options_leaves_every_config_hash_unchanged(monkeypatch):
    """The options as checked are the options as written: results recorded before the checks keep
    their config hashes (so they are not stale for it)."""
    import fgsm_repro.config.schema as config

    profiles = ("paper", "fast", "ci")
    checked = {(n, p): load_config(path, p).hash() for n, path in experiment_configs().items() for p in profiles}
    monkeypatch.setattr(config, "options_schema", lambda *_: None)
    assert checked == {(n, p): load_config(path, p).hash() for n, path in experiment_configs().items()
                       for p in profiles}


def test_a_bad_config_on_the_command_line_writes_nothing(tmp_path):
    path = _config(tmp_path, "model: {options: {pieces: 0}}\n")
    code, out, err = run_cli(["train", str(path), "--profile", "ci", "--run-dir", str(tmp_path / "run")])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "model.options.pieces" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", str(T2), "--seed", "99999999999999999999999"], "Invalid value for '--seed'"),
    (["train", str(T2), "--seed", "-1"], "Invalid value for '--seed'"),
    (["train", str(T2), "--profile", "paperish"], "unknown profile"),
    (["attack", "runs/none", "--param", "steps=["], "invalid YAML"),
    (["attack", "runs/none", "--param", "=3"], "--param expects KEY=VALUE"),
    (["bench", "--reps", "0"], "Invalid value for '--reps'"),
    (["nosuchcommand"], "No such command"),
    (["report", "--results-dir", "/nonexistent/typo"], "does not exist"),
])
def test_bad_arguments_are_one_line_errors(argv, message):
    code, _, err = run_cli(argv)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_report_refuses_a_folder_without_results(tmp_path):
    code, _, err = run_cli(["report", "--results-dir", str(tmp_path)])
    assert code == 2 and "no results files" in err and not (tmp_path / "REPORT.md").exists()


# --- fail before the work --------------------------------------------------------------------------

def _no_work(monkeypatch, *targets):
    def work(*_, **__):
        raise AssertionError("the work started before the output paths were checked")

    for module, name in targets:
        monkeypatch.setattr(module, name, work)


def test_attack_checks_out_before_attacking(tmp_path, monkeypatch):
    import fgsm_repro.runs as runs

    _no_work(monkeypatch, (runs, "load_run"))
    for out, message in ((tmp_path / "missing" / "x.json", "does not exist"), (tmp_path, "is a folder")):
        code, _, err = run_cli(["attack", str(tmp_path), "--out", str(out)])
        assert code == 2 and message in err and err.count("\n") == 1


def _refuse_writes_in(monkeypatch, folder: Path):
    """The file system refuses new files in `folder` (as a read-only mount would; tests run as root,
    whom chmod does not stop)."""
    real = __import__("tempfile").mkstemp
    real_tf = __import__("tempfile").TemporaryFile

    def refuse(dir=None):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def mkstemp(*a, dir=None, **k):
        refuse(dir)
        return real(*a, dir=dir, **k)

    def temporary_file(*a, dir=None, **k):
        refuse(dir)
        return real_tf(*a, dir=dir, **k)

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(files.tempfile, "TemporaryFile", temporary_file)


def test_reproduce_checks_results_and_runs_dirs_before_training(tmp_path, monkeypatch):
    import fgsm_repro.experiments.runner as runner

    _no_work(monkeypatch, (runner, "run_config"))
    (tmp_path / "ro").mkdir()
    _refuse_writes_in(monkeypatch, tmp_path / "ro")
    for flag in ("--results-dir", "--runs-dir"):
        other = "--runs-dir" if flag == "--results-dir" else "--results-dir"
        code, _, err = run_cli(["reproduce", "T1.softmax", "--profile", "ci", flag, str(tmp_path / "ro"),
                                other, str(tmp_path / "ok")])
        assert code == 2 and "not writable" in err and err.count("\n") == 1, err
    code, _, err = run_cli(["reproduce", "T1.softmax", "--profile", "ci", "--results-dir", str(tmp_path / "f"),
                            "--update-baselines", "--profile", "fast"])
    assert code == 2 and "--update-baselines" in err


def test_train_checks_its_run_dir_before_loading_data(tmp_path, monkeypatch):
    import fgsm_repro.runs as runs

    _no_work(monkeypatch, (runs, "make_splits"))
    (tmp_path / "ro").mkdir()
    _refuse_writes_in(monkeypatch, tmp_path / "ro")
    code, _, err = run_cli(["train", str(REPO / "configs" / "t1_softmax.yaml"), "--profile", "ci", "--run-dir",
                            str(tmp_path / "ro" / "run")])
    assert code == 2 and "run dir" in err and "not writable" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ReproError, match="not writable"):
        files.check_writable(ro, "results dir")


# --- atomic, race-free writes ----------------------------------------------------------------------

def _writer(path: str, tag: int, count: int) -> None:
    for i in range(count):
        files.write_json(path, {"writer": tag, "i": i, "payload": "x" * (1000 * (1 + (i + tag) % 50))})


def test_concurrent_writers_leave_one_complete_file_and_readers_never_see_a_part(tmp_path):
    path = tmp_path / "result.json"
    files.write_json(path, {"writer": -1})
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(path), tag, 300)) for tag in range(2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers):
        json.loads(path.read_text())  # a part would not parse
        reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert json.loads(path.read_text())["i"] == 299
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary file left
    print(f"{reads} reads during 600 concurrent writes")


def test_temporary_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    path = tmp_path / "result.json"
    abandoned, live = tmp_path / ".result.json.dead.tmp", tmp_path / ".result.json.live.tmp"
    for tmp in (abandoned, live):
        tmp.write_text("{")
        os.utime(tmp, (time.time() - 60, time.time() - 60))
    with open(live, "rb") as held:  # a writer still at work holds its lock
        import fcntl

        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        files.write_json(path, {"ok": 1})
        assert not abandoned.exists() and live.exists()
    assert json.loads(path.read_text()) == {"ok": 1}


def test_a_fresh_temporary_file_is_removed_only_when_its_writer_has_ended(tmp_path):
    # A kill just before the rerun's write: the file is younger than the grace period of a writer
    # that has created its file and not yet locked it; its name says the writer has ended.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True).stdout.strip()
    host = socket.gethostname()
    path = tmp_path / "result.json"
    of_ended, of_live, of_other_host = (tmp_path / f".result.json.{writer}.abc123.tmp"
                                        for writer in (f"{host}-{ended}", f"{host}-{os.getpid()}",
                                                       f"elsewhere-{ended}"))
    for tmp in (of_ended, of_live, of_other_host):
        tmp.write_text("{")
    files.write_json(path, {"ok": 1})
    assert not of_ended.exists() and of_live.exists() and of_other_host.exists()


def test_a_full_disk_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    from fgsm_repro.report import write_report

    shutil.copy(REPO / "results" / "t1_softmax.paper.json", tmp_path)
    before = write_report(tmp_path).read_text()

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(ReproError, match="No space left on device") as err:
        files.write_json(tmp_path / "t1_softmax.paper.json", {"measured": {}})
    assert "\n" not in str(err.value)
    (tmp_path / "t1_softmax.paper.json").write_text((REPO / "results" / "t1_softmax.paper.json").read_text())
    with pytest.raises(ReproError, match="cannot write .*(REPORT.md|claims.png)"):
        write_report(tmp_path)
    assert (tmp_path / "REPORT.md").read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(files.TEMP_SUFFIX)]


def test_a_full_disk_on_the_command_line_is_one_line(tmp_path, monkeypatch):
    shutil.copy(REPO / "results" / "t1_softmax.paper.json", tmp_path)
    monkeypatch.setattr(files.os, "fsync", lambda _: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    code, _, err = run_cli(["report", "--results-dir", str(tmp_path)])
    assert code == 2 and err.startswith("error: cannot write") and err.count("\n") == 1


def test_an_unreadable_results_file_is_reported_not_skipped(tmp_path):
    from fgsm_repro.report import build_report

    shutil.copy(REPO / "results" / "t1_softmax.paper.json", tmp_path)
    (tmp_path / "t2_maxout240.paper.json").write_text('{"measured": {"T1.maxout": {"error": 89')  # cut mid-write
    (tmp_path / "s7_rbf.paper.json").write_text('{"measured": {}}')  # no provenance
    records, unreadable = scan_results(tmp_path)
    assert [r["name"] for r in records] == ["t1_softmax"]
    assert [u.split(":")[0] for u in unreadable] == ["s7_rbf.paper.json", "t2_maxout240.paper.json"]
    report = build_report(tmp_path)
    assert "2 results file(s) could not be read" in report and "t2_maxout240.paper.json" in report
    code, _, err = run_cli(["report", "--results-dir", str(tmp_path)])
    assert code == 0 and "warning: unreadable results file t2_maxout240.paper.json" in err


# --- stale results and baselines -------------------------------------------------------------------

def _copy_record(tmp_path: Path, name: str, **provenance) -> dict:
    record = json.loads((REPO / "results" / name).read_text())
    record["provenance"].update(provenance)
    (tmp_path / name).write_text(json.dumps(record))
    return record


def test_a_result_of_another_config_or_dataset_is_stale_and_reproduce_stale_picks_exactly_it(tmp_path):
    from fgsm_repro.experiments.runner import configs_for, stale_configs

    fresh = _copy_record(tmp_path, "t1_softmax.paper.json")
    changed = _copy_record(tmp_path, "s7_rbf.paper.json", config_hash="0000")
    changed["provenance"]["config"]["train"]["epochs"] += 1
    (tmp_path / "s7_rbf.paper.json").write_text(json.dumps(changed))
    other_data = _copy_record(tmp_path, "f2_logistic.paper.json")
    other_data["provenance"]["dataset"]["sha256"] = "f" * 64
    (tmp_path / "f2_logistic.paper.json").write_text(json.dumps(other_data))
    records = {r["name"]: r for r in read_results(tmp_path)}
    assert stale_reason(records["t1_softmax"]) is None and stale_reason(fresh | {"_file": ""}) is None
    assert "config has changed" in stale_reason(records["s7_rbf"])
    data_reason = stale_reason(records["f2_logistic"])
    if data_reason is None:
        pytest.skip("MNIST is not prepared here: nothing to compare the dataset checksum with")
    assert "is not the data it was measured on" in data_reason
    assert [p.stem for p in stale_configs(configs_for([]), "paper", tmp_path)] == ["f2_logistic", "s7_rbf"]
    assert stale_configs(configs_for([]), "fast", tmp_path) == []
    from fgsm_repro.report import build_report

    report = build_report(tmp_path)
    assert report.count("**stale**") >= 2 and "reproduce --stale" in report


@pytest.mark.mnist
def test_ci_runs_do_not_touch_the_baselines_unless_asked(tmp_path, mnist_data_dir):
    project = tmp_path / "project"  # a workdir of its own: its tests/baselines/, not this checkout's
    project.mkdir()
    (project / "configs").symlink_to(REPO / "configs")
    baselines = project / "tests" / "baselines"
    argv = ["reproduce", "F2.adv", "--profile", "ci", "--results-dir", str(tmp_path / "r"), "--runs-dir",
            str(tmp_path / "u"), "--data-dir", str(mnist_data_dir), "-q", "--workdir", str(project)]
    code, _, err = run_cli(argv)
    assert code == 0, err
    assert (tmp_path / "r" / "f2_logistic.ci.json").is_file() and not baselines.exists()
    code, out, err = run_cli(argv + ["--update-baselines"])
    assert code == 0, err
    assert json.loads((baselines / "f2_logistic.ci.json").read_text())["measured"] == \
        json.loads((tmp_path / "r" / "f2_logistic.ci.json").read_text())["measured"]


# --- run records ------------------------------------------------------------------------------------

@pytest.mark.mnist
def test_a_run_survives_its_config_moving(tmp_path, mnist_data_dir):
    from fgsm_repro.runs import load_run, train_run

    config = tmp_path / "user_softmax.yaml"
    config.write_text(f"inherit: {REPO / 'configs' / 't1_softmax.yaml'}\n")
    record = train_run(config, "ci", run_dir=tmp_path / "run", data_dir=mnist_data_dir)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    config.rename(moved / config.name)  # the run record's path is gone; the copy in it remains
    run = load_run(tmp_path / "run", data_dir=mnist_data_dir)
    assert run.cfg.hash() == record["config_hash"]
    shutil.move(tmp_path / "run", moved / "run")  # the project moved: found beside the run again
    (moved / config.name).rename(tmp_path / config.name)
    assert load_run(moved / "run", data_dir=mnist_data_dir).cfg.hash() == record["config_hash"]


# --- interrupts -------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.mnist
def test_ctrl_c_prints_the_resume_hint_and_exits_130(tmp_path, mnist_data_dir):
    env = dict(os.environ, TFDS_DATA_DIR=str(mnist_data_dir))
    proc = subprocess.Popen([sys.executable, "-c", "from fgsm_repro.cli import main; main()", "train",
                             str(T2), "--profile", "ci", "--run-dir", str(tmp_path / "run"), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 120
    while not list((tmp_path / "run").glob("checkpoints/*")) and time.time() < deadline:  # training has begun
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == cli.RESUME_HINT and "Traceback" not in err

