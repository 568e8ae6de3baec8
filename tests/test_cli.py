"""CLI integration on tiny configs: train -> attack -> reproduce -> report, and one-line errors."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, run_two_processes
from typer.testing import CliRunner

from fgsm_repro.cli import app
from fgsm_repro.errors import ReproError

TINY = """\
experiment: t1_softmax
claims: [T1.softmax]
data: {dataset: mnist, validation_size: 10000}
model: {name: softmax_regression}
train:
  epochs: 2
  batch_size: 500
  optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.5}
  checkpoint_every: 1
attack: {eps: 0.25}
"""

pytestmark = pytest.mark.mnist
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3"}
TWO_PROCESSES_NEED_DATA_PARALLEL = ("2 processes (FGSM_REPRO_DISTRIBUTED=1) share a run only with "
                                    "`train: {data_parallel: true}` (or --data-parallel)")


def _cli(*args, env_data_dir=None, **env_vars):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env_vars}
    if env_data_dir:
        env["TFDS_DATA_DIR"] = str(env_data_dir)
    return subprocess.run([sys.executable, "-m", "fgsm_repro.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)


def test_train_attack_report(tmp_path, mnist_data_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    runner = CliRunner()
    run_dir = tmp_path / "run"
    res = runner.invoke(app, ["train", str(config), "--run-dir", str(run_dir), "--data-dir", str(mnist_data_dir),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["epochs_run"] == 2 and 5.0 < info["test_error"] < 20.0

    out = tmp_path / "attack.json"
    res = runner.invoke(app, ["attack", str(run_dir), "--eps", "0.25", "--out", str(out), "--save-examples", "8",
                              "--data-dir", str(mnist_data_dir)])
    assert res.exit_code == 0, res.output
    record = json.loads(out.read_text())
    assert record["adversarial"]["error"] > 90.0 > record["clean"]["error"]
    assert record["provenance"]["dataset"]["name"] == "mnist"
    assert (tmp_path / "attack.examples.npz").is_file()

    res = runner.invoke(app, ["attack", str(run_dir), "--eps", "0.1", "--clip", "0,1", "--labels", "predicted",
                              "--data-dir", str(mnist_data_dir)])
    assert res.exit_code == 0, res.output

    res = runner.invoke(app, ["reproduce", "T1.softmax", "--profile", "ci", "--results-dir", str(tmp_path / "res"),
                              "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(mnist_data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "res" / "REPORT.md").read_text()
    # ci runs are regression baselines: reported in their section, not as reproductions.
    assert "### t1_softmax — `ci` profile" in report and "T1.softmax (ci smoke run only)" in report
    assert "| T1.softmax | error |" not in report

    # Training again resumes from the finished checkpoint instead of starting over.
    res = runner.invoke(app, ["train", str(config), "--run-dir", str(run_dir), "--data-dir", str(mnist_data_dir),
                              "--quiet"])
    again = json.loads((run_dir / "run.json").read_text())
    assert res.exit_code == 0 and again["test_error"] == info["test_error"]
    assert again["wall_time_s"] < info["wall_time_s"] or again["epochs_run"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["1", "2"]  # no new epochs

    # An edited training config no longer matches the trained parameters.
    config.write_text(TINY.replace("learning_rate: 0.1", "learning_rate: 0.2"))
    res = runner.invoke(app, ["attack", str(run_dir), "--data-dir", str(mnist_data_dir)])
    assert isinstance(res.exception, ReproError) and "changed since" in str(res.exception)


@pytest.mark.parametrize("args, fooled_l2", [
    (["--attack", "fgm", "--eps", "2"], (1.9, 2.0 + 1e-6)),
    (["--attack", "bim", "--eps", "0.1", "--param", "target=least_likely"], None),
    (["--attack", "pgd", "--eps", "1.5", "--param", "norm=2", "--param", "restarts=2"], (0.1, 1.5 + 1e-6)),
    (["--attack", "deepfool", "--labels", "predicted"], (0.05, 5.0)),
    (["--attack", "jsma", "--param", "gamma=0.05"], None),
    (["--attack", "cw", "--param", "steps=30", "--param", "binary_search_steps=3", "--param", "initial_const=1"],
     (0.01, 5.0)),
])
def test_every_attack_runs_from_the_cli_with_norms_time_and_pictures(tmp_path, mnist_data_dir, trained_tiny, args,
                                                                      fooled_l2):
    out = tmp_path / "a.json"
    res = CliRunner().invoke(app, ["attack", str(trained_tiny), *args, "--limit", "200", "--save-examples", "3",
                                   "--out", str(out), "--data-dir", str(mnist_data_dir)])
    assert res.exit_code == 0, res.output
    record = json.loads(out.read_text())
    assert record["attack"]["name"] == args[1] and record["examples"] == 200
    adv, norms = record["adversarial"], record["adversarial"]["norms"]
    assert adv["error"] > record["clean"]["error"] and adv["seconds_per_example"] > 0
    assert 0 < norms["examples"] <= 200 and norms["l0"]["median"] >= 1
    if fooled_l2:
        assert fooled_l2[0] <= norms["l2"]["median"] <= fooled_l2[1], norms
    assert (tmp_path / "a.examples.npz").is_file() and (tmp_path / "a.examples.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--attack", "deepfool", "--eps", "0.1"], "eps: unknown key for deepfool"),
    (["--attack", "cw", "--param", "steps=-1"], "steps"),
    (["--attack", "nope"], "unknown attack 'nope'"),
    (["--space", "pixels"], "--space must be"),
])
def test_bad_attack_options_are_one_line_errors(mnist_data_dir, trained_tiny, args, message):
    res = CliRunner().invoke(app, ["attack", str(trained_tiny), *args, "--data-dir", str(mnist_data_dir)])
    assert isinstance(res.exception, ReproError) and message in str(res.exception), res.output


def test_an_attack_runs_from_python_without_the_cli(tmp_path, mnist_data_dir, trained_tiny):
    from fgsm_repro.attack_run import AttackReport, run_attack, write_attack_record

    report = run_attack(trained_tiny, "fgm", eps=2.0, params={"norm": 2}, limit=100, data_dir=mnist_data_dir)
    assert isinstance(report, AttackReport) and report.spec.name == "fgm" and report.examples == 100
    assert report.adversarial["error"] > report.clean["error"] and not report.configured and not report.written
    written = write_attack_record(report, out=tmp_path / "a.json", save_examples=4)
    assert sorted(written) == ["json", "npz", "png"] and json.loads(written["json"].read_text()) == json.loads(
        json.dumps(report.record()))
    assert run_attack(trained_tiny, data_dir=mnist_data_dir).configured  # the config's attack, whole test set
    with pytest.raises(ReproError, match="attack option eps"):
        run_attack(trained_tiny, eps=-1.0)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory, mnist_data_dir):
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.yaml").write_text(TINY)
    res = CliRunner().invoke(app, ["train", str(folder / "tiny.yaml"), "--run-dir", str(folder / "run"),
                                   "--data-dir", str(mnist_data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    return folder / "run"


@pytest.mark.slow  # a subprocess or a long training
def test_reproduce_in_two_processes_writes_one_result(tmp_path, mnist_data_dir):
    """`reproduce` as the two processes of one run, data-parallel by the command line's flag: the
    first writes the results and the report; the numbers are the one-process run's up to float
    rounding. Without the flag (the configs keep one device) both refuse."""
    from fgsm_repro.config import experiment_configs
    from fgsm_repro.experiments.common import Context
    from fgsm_repro.experiments.runner import run_config

    def reproduce(*flags: str, returncode: int = 0):
        return run_two_processes([sys.executable, "-m", "fgsm_repro.cli", "reproduce", "T1.softmax", "--profile", "ci",
                                  *flags, "--results-dir", str(tmp_path / "two"), "--runs-dir", str(tmp_path / "runs"),
                                  "--data-dir", str(mnist_data_dir), "--quiet"], QUIET_TF, timeout=600,
                                 returncode=returncode)

    config = experiment_configs()["t1_softmax"]
    for _, stderr in reproduce(returncode=2):
        assert stderr.strip().splitlines()[-1] == f"error: {config}: {TWO_PROCESSES_NEED_DATA_PARALLEL}"
    assert not (tmp_path / "two").exists() and not (tmp_path / "runs").exists()

    (first, _), (second, _) = reproduce("--data-parallel")
    assert "report ->" in first and "report ->" not in second
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["REPORT.md", "figures", "t1_softmax.ci.json"]
    two = json.loads((tmp_path / "two" / "t1_softmax.ci.json").read_text())
    assert two["provenance"]["device"]["process_count"] == 2 and two["provenance"]["config"]["train"]["data_parallel"]

    one = json.loads(run_config(config, "ci", Context(data_dir=mnist_data_dir, results_dir=tmp_path / "one",
                                                      runs_dir=tmp_path / "one_runs", show_progress=False)).read_text())
    assert one["provenance"]["config_hash"] == two["provenance"]["config_hash"]  # the flag is not part of the hash
    compared = 0
    for metric, value in one["measured"]["T1.softmax"].items():
        if isinstance(value, float):
            assert two["measured"]["T1.softmax"][metric] == pytest.approx(value, rel=1e-4, abs=0.05), metric
            compared += 1
    assert compared >= 8


def test_train_prints_the_paper_row_its_clean_test_error_stands_for(tmp_path, mnist_data_dir):
    res = CliRunner().invoke(app, ["train", str(REPO / "configs" / "f2_logistic.yaml"), "--profile", "ci",
                                   "--run-dir", str(tmp_path / "run"), "--data-dir", str(mnist_data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    shown = " ".join(res.output.split())
    assert "this clean run of training 'model'" in shown
    assert f"F2.clean │ error │ 1.6 │ {record['test_error']:.2f} │ ±0.25" in shown


def test_every_training_of_an_experiment_is_a_run_dir_the_attack_command_reads(tmp_path, mnist_data_dir):
    from fgsm_repro.config import experiment_configs
    from fgsm_repro.experiments.common import Context
    from fgsm_repro.experiments.runner import run_config

    ctx = Context(data_dir=mnist_data_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
                  show_progress=False)
    result = json.loads(run_config(experiment_configs()["t1_softmax"], "ci", ctx).read_text())
    run_dir, = (tmp_path / "runs" / "t1_softmax.ci").glob("seed0-model*")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["training"] == "model" and record["profile"] == "ci" and record["seed"] == 0
    assert record["test_error"] == pytest.approx(result["measured"]["T1.softmax"]["clean_error"])
    written = (run_dir / "run.json").stat().st_mtime_ns
    run_config(experiment_configs()["t1_softmax"], "ci", ctx)  # resumed, finished: the run dir is kept as it is
    assert (run_dir / "run.json").stat().st_mtime_ns == written

    out = tmp_path / "attack.json"
    res = CliRunner().invoke(app, ["attack", str(run_dir), "--out", str(out), "--data-dir", str(mnist_data_dir)])
    assert res.exit_code == 0, res.output
    # The config's attack on the whole test set: the paper's rows it stands for, with the verdicts.
    shown = " ".join(res.output.split())
    assert "this attack run of training 'model'" in shown and "T1.softmax │ error │ 99.9" in shown
    assert "confidence_m" in shown and "│ ci" in shown
    attacked = json.loads(out.read_text())
    assert attacked["adversarial"]["error"] == pytest.approx(result["measured"]["T1.softmax"]["error"], abs=0.01)
    assert "target_hit" not in attacked["adversarial"]
    res = CliRunner().invoke(app, ["attack", str(run_dir), "--attack", "bim", "--param", "target=least_likely",
                                   "--limit", "100", "--out", str(out), "--data-dir", str(mnist_data_dir)])
    assert res.exit_code == 0 and "classified as their target" in res.output, res.output
    assert "T1.softmax" not in res.output  # another attack on 100 images stands for no paper number
    assert 0 <= json.loads(out.read_text())["adversarial"]["target_hit"] <= 100


@pytest.mark.slow  # a subprocess or a long training
def test_repeated_runs_compile_nothing_again(tmp_path, mnist_data_dir, no_jax_cache_env):
    config, run_dir, cache = tmp_path / "tiny.yaml", tmp_path / "run", tmp_path / "jax-cache"
    config.write_text(TINY.replace("epochs: 2", "epochs: 1"))
    # JAX logs each persistent-cache miss as a warning with this setting.
    env = {"FGSM_REPRO_JAX_CACHE": str(cache), "TFDS_DATA_DIR": str(mnist_data_dir), "JAX_EXPLAIN_CACHE_MISSES": "1"}
    trained = _cli("train", str(config), "--run-dir", str(run_dir), "--quiet", **env)
    assert trained.returncode == 0, trained.stderr
    assert any(name.startswith("jit_train_epoch") for name in os.listdir(cache))
    first, second = (_cli("attack", str(run_dir), "--out", str(tmp_path / "attack.json"), **env) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    # The first attack compiled its own programs; the second loaded every program from the cache.
    assert "PERSISTENT COMPILATION CACHE MISS for 'jit__attack_batch'" in first.stderr
    assert "PERSISTENT COMPILATION CACHE MISS" not in second.stderr


@pytest.mark.slow  # a subprocess or a long training
@pytest.mark.parametrize("args, message", [
    (["attack", "/nonexistent-run"], "not a trained run"),
    (["reproduce", "T9.none"], "unknown claim ID"),
    (["reproduce", "F1.panda"], "has no experiment yet"),
    (["reproduce", "--profile", "huge"], "unknown profile"),
    (["train", "configs/does-not-exist.yaml"], "config file not found"),
    (["data", "info", "imagenet"], "unknown dataset"),
])
def test_errors_are_one_line(args, message):
    res = _cli(*args)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], res.stderr


@pytest.mark.slow  # a subprocess or a long training
def test_unknown_cpu_tuning_is_one_line():
    res = _cli("data", "info", "mnist", FGSM_REPRO_CPU_TUNING="reduce,fast")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "error: FGSM_REPRO_CPU_TUNING: unknown tuning fast (use 1, 0 or a comma-separated list of "
        "reduce, threefry, conv, attack)"], res.stderr


@pytest.mark.slow  # a subprocess or a long training
def test_option_out_of_range_is_refused_by_the_parser():
    res = _cli("attack", "/nonexistent-run", "--save-examples", "-3")
    assert res.returncode == 2 and "Invalid value" in res.stderr


@pytest.mark.slow  # a subprocess or a long training
def test_missing_data_names_the_import_command(tmp_path):
    res = _cli("train", "configs/t1_softmax.yaml", "--profile", "ci", "--run-dir", str(tmp_path / "r"),
               env_data_dir=tmp_path / "empty")
    assert res.returncode == 2
    assert "fgsm-repro data import mnist" in res.stderr


@pytest.mark.slow  # a subprocess or a long training
def test_negative_eps_on_the_command_line(tmp_path, mnist_data_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("epochs: 2", "epochs: 1"))
    assert _cli("train", str(config), "--run-dir", str(tmp_path / "run"), "--data-dir", str(mnist_data_dir),
                "--quiet").returncode == 0
    res = _cli("attack", str(tmp_path / "run"), "--eps", "-0.5", "--data-dir", str(mnist_data_dir))
    assert res.returncode == 2 and "eps" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.slow  # a subprocess or a long training
def test_train_and_attack_in_two_processes_write_one_run(tmp_path, mnist_data_dir):
    """Two processes of one data-parallel run (as on two hosts, jax.distributed over loopback):
    both compute, the first writes; the run is the one-process run up to float rounding."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("  checkpoint_every: 1\n", "  checkpoint_every: 1\n  data_parallel: true\n"))

    def both(*args: str, says: str) -> None:
        (first, _), (second, _) = run_two_processes(
            [sys.executable, "-m", "fgsm_repro.cli", *args, "--data-dir", str(mnist_data_dir)], QUIET_TF, timeout=300)
        assert says in first and says not in second  # the first process reports and writes

    run_dir, out = tmp_path / "run", tmp_path / "attack.json"
    both("train", str(config), "--run-dir", str(run_dir), "--quiet", says="trained")
    both("attack", str(run_dir), "--out", str(out), "--save-examples", "4", says="metrics ->")
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "final", "history.json", "run.json"]
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))  # the run folder's lock beside it
    assert left == ["attack.examples.npz", "attack.examples.png", "attack.json", "run", "tiny.yaml"]
    two = json.loads((run_dir / "run.json").read_text())
    assert json.loads(out.read_text())["adversarial"]["error"] > 90.0

    # Without data parallelism each process would train the whole model alone: refused.
    config.write_text(TINY)
    for _, stderr in run_two_processes([sys.executable, "-m", "fgsm_repro.cli", "train", str(config), "--run-dir",
                                        str(tmp_path / "refused"), "--data-dir", str(mnist_data_dir)],
                                       QUIET_TF, timeout=300, returncode=2):
        assert stderr.strip().splitlines()[-1] == f"error: {config}: {TWO_PROCESSES_NEED_DATA_PARALLEL}"
    assert not (tmp_path / "refused").exists()

    one_dir = tmp_path / "one"
    res = _cli("train", str(config), "--run-dir", str(one_dir), "--data-dir", str(mnist_data_dir), "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((one_dir / "run.json").read_text())
    assert abs(one["test_error"] - two["test_error"]) <= 0.05 and one["val_error"] == pytest.approx(two["val_error"],
                                                                                                       abs=0.05)
    one_out = tmp_path / "one_attack.json"
    res = _cli("attack", str(one_dir), "--out", str(one_out), "--data-dir", str(mnist_data_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    errors = [json.loads(path.read_text())["adversarial"]["error"] for path in (one_out, out)]
    assert errors[0] == pytest.approx(errors[1], abs=0.05)


@pytest.mark.cifar
@pytest.mark.slow  # a (ci-sized) conv training
def test_attacks_reach_cifars_pixels_through_its_preprocessing(tmp_path, cifar_data_dir):
    """--space pixel attacks [0, 1] pixels through GCN + ZCA: the examples stay in the pixel range
    with a pixel-space budget; --space preprocessed attacks the whitened inputs."""
    import numpy as np

    from fgsm_repro.config import experiment_configs

    runner, run_dir = CliRunner(), tmp_path / "run"
    config = tmp_path / "convmaxout_one_epoch.yaml"  # the ci network, one epoch: the attack is under test
    config.write_text(f"inherit: {experiment_configs()['t1_convmaxout']}\nprofiles: {{ci: {{train: {{epochs: 1}}}}}}\n")
    res = runner.invoke(app, ["train", str(config), "--profile", "ci", "--run-dir",
                              str(run_dir), "--data-dir", str(cifar_data_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    records = {}
    for space in ("preprocessed", "pixel"):
        out = tmp_path / f"{space}.json"
        clip = "0,1" if space == "pixel" else "none"  # whitened inputs have no [0, 1] range
        res = runner.invoke(app, ["attack", str(run_dir), "--attack", "bim", "--eps", "0.02", "--space", space,
                                  "--clip", clip, "--limit", "40", "--save-examples", "2", "--out", str(out),
                                  "--data-dir", str(cifar_data_dir)])
        assert res.exit_code == 0, res.output
        records[space] = json.loads(out.read_text())
        assert records[space]["space"] == space and "JPEG" in res.output
    pixels = np.load(tmp_path / "pixel.examples.npz")
    assert pixels["x"].min() >= 0 and pixels["x"].max() <= 1 and pixels["x_adv"].max() <= 1
    assert np.abs(pixels["x_adv"] - pixels["x"]).max() <= 0.02 + 1e-6
    whitened = np.load(tmp_path / "preprocessed.examples.npz")["x"]
    assert whitened.min() < 0  # the preprocessed inputs are not pixels
    assert records["pixel"]["adversarial"]["error"] >= records["pixel"]["clean"]["error"]
