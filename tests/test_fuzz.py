"""Fuzzing the entry points: the config loader and the command line, with random and malformed
input, never end in a traceback — either they accept the input or they refuse it in one line.

The cases tried are counted (hypothesis draws new ones every run) and printed at the end of the
test run; docs/guarantees.md quotes them.
"""

import contextlib
import copy
import io

import jax
import jax.numpy as jnp
import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fgsm_repro import cli
from fgsm_repro.config import load_config, read_config_tree
from fgsm_repro.errors import ReproError
from fgsm_repro.experiments.runner import experiment_module
from fgsm_repro.models import build_model
from tests.helpers import count_case, key_paths

BASES = ["t2_maxout240", "t1_convmaxout", "attacks_mnist", "s9_ensemble", "t1_softmax", "a_rubbish_mnist"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Values a config field should never crash on: out of range, of the wrong type, not finite.
ODD_VALUES = st.one_of(
    st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.text(max_size=8), st.sampled_from(["fgsm", "pgd", "inf", "zeros", "1e999", "[", "{a: 1}"]),
    st.lists(st.integers(-3, 300), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _mutate(tree, path, action, value):
    *parents, last = path
    node = tree
    for p in parents:
        node = node[p]
    if action == "replace":
        node[last] = value
    elif action == "delete":
        del node[last]
    elif isinstance(node, dict):  # "add": a sibling key of any name
        node[str(value)[:12] or "x"] = value


@st.composite
def mutated_configs(draw):
    base = draw(st.sampled_from(BASES))
    tree = copy.deepcopy(read_config_tree(REPO / "configs" / f"{base}.yaml"))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(key_paths(tree))
        if not paths:
            break
        _mutate(tree, draw(st.sampled_from(paths)), draw(st.sampled_from(["replace", "replace", "delete", "add"])),
                draw(ODD_VALUES))
    return tree, draw(st.sampled_from(["paper", "fast", "ci"]))


def _accepted_or_one_line(path, profile):
    try:
        cfg = load_config(path, profile)
        experiment_module(cfg, path)  # the names the runner resolves
    except ReproError as e:
        assert "\n" not in str(e), str(e)
        return None
    return cfg


@FUZZ
@given(case=mutated_configs())
def test_mutated_configs_load_or_fail_in_one_line(tmp_path, case):
    tree, profile = case
    path = tmp_path / "fuzzed.yaml"
    try:
        path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    except (yaml.YAMLError, UnicodeEncodeError):  # a value YAML cannot write (a lone surrogate)
        return
    count_case("config loader: mutated configs")
    cfg = _accepted_or_one_line(path, profile)
    if cfg is None:
        return
    count_case("config loader: mutated configs accepted, models built")
    shape = (1, 32, 32, 3) if cfg.data.dataset == "cifar10" else (1, 28, 28, 1)
    for model in cfg.model_specs().values():  # an accepted model can be built (shapes only, no memory)
        module, _ = build_model(model.name, model.options)
        jax.eval_shape(lambda m=module: m.init(jax.random.PRNGKey(0), jnp.zeros(shape)))


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_as_a_config_fail_in_one_line(tmp_path, data):
    count_case("config loader: random bytes and text")
    path = tmp_path / "random.yaml"
    path.write_bytes(data)
    with pytest.raises(ReproError) as err:
        load_config(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


# --- the command line ------------------------------------------------------------------------------

COMMANDS = [["train"], ["attack"], ["reproduce"], ["report"], ["data", "info"]]
OPTIONS = ["--profile", "--seed", "--run-dir", "--training", "--attack", "--eps", "--clip", "--labels", "--param",
           "--space", "--limit", "--save-examples", "--out", "--stale", "--update-baselines", "--fresh", "--list",
           "--data-parallel", "--one-device", "-q", "--nosuch"]
WORDS = ["configs/t1_softmax.yaml", "configs/t2_maxout240.yaml", "nosuch.yaml", "T1.softmax", "F2.adv", "Z9.none",
         "paper", "fast", "ci", "pgd", "cw", "deepfool", "nosuch", "0", "-1", "1e309", "nan", "inf", "2",
         "99999999999999999999", "0,1", "1,0", "a,b", "steps=3", "steps=-1", "steps=[", "eps=nan", "=", "",
         "predicted", "pixel", "mnist", "cifar10", "{", "/nonexistent/x.json", ".", "runs", "ü", "--"]


@st.composite
def command_lines(draw):
    argv = list(draw(st.sampled_from(COMMANDS)))
    argv += draw(st.lists(st.one_of(st.sampled_from(OPTIONS), st.sampled_from(WORDS)), max_size=6))
    return argv


@FUZZ
@given(argv=command_lines())
def test_random_command_lines_never_end_in_a_traceback(tmp_path, monkeypatch, argv):
    """Whatever the arguments, the CLI exits 0 or with a one-line ``error:`` (exit 2). The data dir
    is empty, so anything valid stops at "dataset not found" instead of training."""
    monkeypatch.chdir(REPO)  # the relative config paths above; written files go to tmp_path below
    count_case("command line: random arguments")
    safe = ["--data-dir", str(tmp_path / "no-data")] if argv[0] in ("train", "attack", "reproduce", "data") else []
    if argv[0] in ("reproduce", "report"):
        safe += ["--results-dir", str(tmp_path / "results")]
    if argv[0] == "reproduce":
        safe += ["--runs-dir", str(tmp_path / "runs")]
    if argv[0] == "train":
        safe += ["--run-dir", str(tmp_path / "run")]
    words = 2 if argv[0] == "data" else 1  # the safe options first: a random "--" cannot swallow them
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*argv[:words], *safe, *argv[words:]])
    err = stderr.getvalue()
    assert exit_.value.code in (0, 2), (argv, err)
    assert "Traceback" not in err
    if exit_.value.code == 2:
        assert err.strip().splitlines()[-1].startswith("error: ") and len(err.strip().splitlines()) == 1, (argv, err)
