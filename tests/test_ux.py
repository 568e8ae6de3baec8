"""What a user sees: help screens, the version, progress in a log, the rows a command has just
measured, a quiet data import, and the GPU path on a machine without a GPU."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA

from fgsm_repro import cpu_tuning, gpu_check
from tests.helpers import run_cli


def test_version():
    code, out, _ = run_cli(["--version"])
    assert code == 0 and out.startswith("fgsm-repro ") and out.split()[1][0].isdigit()


def test_help_shows_bracketed_defaults_and_bench_lists_its_workloads():
    from fgsm_repro.bench import WORKLOADS

    code, out, _ = run_cli(["train", "--help"])
    assert code == 0 and "[default: (the config's first)" in " ".join(out.split())
    assert "train [OPTIONS] CONFIG\n" in out and "{" not in out.splitlines()[0] and "<bool>" not in out
    code, out, _ = run_cli(["data", "import", "--help"])
    assert "import [OPTIONS] NAME PATH\n" in out
    code, out, _ = run_cli(["bench", "--help"])
    assert code == 0 and all(f"{name}:" in out for name in WORKLOADS)
    from fgsm_repro.attacks import built_in_attacks

    code, out, _ = run_cli(["attack", "--help"])  # the attacks listed are the registry's
    assert code == 0 and "module:Class" in out and all(f"\n  {name}: " in out for name in built_in_attacks())
    code, out, _ = run_cli(["--help"])
    assert "--install-completion" in out and "--version" in out


@pytest.mark.mnist
def test_reproduce_in_a_log_shows_progress_lines_and_only_the_rows_it_measured(tmp_path, mnist_data_dir):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(REPO / "results" / "t1_softmax.paper.json", results)  # measured before: not this command's
    code, out, err = run_cli(["reproduce", "F2.adv", "--profile", "ci", "--results-dir", str(results),
                              "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(mnist_data_dir)])
    assert code == 0, err
    assert "experiment 1 of 1: f2_logistic [ci]" in out  # markup-like text shown as written
    assert "experiment 1/1 · f2_logistic [ci] seed 0" in err and " · done" in err and "left" in err
    table = out[out.index("measured by this command"):]
    assert "F2.adv" in table and "T1.softmax" not in table
    # Every training leaves its per-epoch records; the experiment, a learning-curve figure.
    histories = list((tmp_path / "runs").rglob("history.json"))
    assert histories and all(json.loads(h.read_text())[0]["loss"] > 0 for h in histories)
    record = json.loads((results / "f2_logistic.ci.json").read_text())
    assert (results / record["figures"]["learning curves"]).is_file()
    report = (results / "REPORT.md").read_text()
    assert "(figures/claims.png)" in report and (results / "figures" / "claims.png").is_file()
    assert report.index("figures/claims.png") < report.index("| ID | metric |")  # above the table


def test_a_profile_that_leaves_an_experiment_to_the_paper_profile_says_so_and_runs_nothing(tmp_path):
    from fgsm_repro.config import experiment_configs, load_config

    skipping = [name for name, path in experiment_configs().items() if load_config(path, "fast").skip]
    assert skipping == ["t2_adv1600", "t2_clean1600"]
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(REPO / "results" / "t1_softmax.paper.json", results)
    code, out, err = run_cli(["reproduce", "T2.clean1600", "--profile", "fast", "--results-dir", str(results),
                              "--runs-dir", str(tmp_path / "runs")])
    assert code == 0, err
    assert "t2_clean1600 [fast]: not run at this profile: left to the paper profile" in " ".join(out.split())
    assert sorted(p.name for p in results.iterdir()) == ["REPORT.md", "figures", "t1_softmax.paper.json"]
    assert not (tmp_path / "runs").exists()
    pending = (results / "REPORT.md").read_text().split("## Not measured yet")[1]
    assert "T2.clean1600 (paper profile only: the `fast` profile skips it, see configs/t2_clean1600.yaml)" in pending


@pytest.mark.mnist
def test_a_trained_run_keeps_its_history(tmp_path, mnist_data_dir):
    from fgsm_repro.runs import train_run

    record = train_run(REPO / "configs" / "f2_logistic.yaml", "ci", run_dir=tmp_path / "run", data_dir=mnist_data_dir)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len([r for r in history if "epoch" in r]) == record["epochs_run"]
    assert all({"loss", "seconds"} <= set(r) for r in history)


def test_the_gpu_check_says_so_and_stops_without_a_gpu(capsys):
    assert gpu_check.main([]) == 0
    assert "JAX sees no GPU or TPU here" in capsys.readouterr().out


def test_cpu_tunings_are_not_reported_on_an_accelerator(monkeypatch):
    import jax

    monkeypatch.setattr(cpu_tuning, "_applied", ["threefry_unrolled"])
    assert cpu_tuning.applied() == ["threefry_unrolled"]
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cpu_tuning.applied() == []


@pytest.mark.slow
def test_a_data_import_prints_one_line(tmp_path):
    if not (SHARED_DATA / "mnist").exists():
        pytest.skip("no offline MNIST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TFDS_"))}
    argv = ["data", "import", "mnist", str(SHARED_DATA / "mnist"), "--data-dir", str(tmp_path)]
    done = subprocess.run([sys.executable, "-m", "fgsm_repro.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.count("\n") == 1 and "imported" in done.stdout
    assert json.loads((tmp_path / "mnist" / "3.0.1" / "provenance.json").read_text())["content_sha256"]
