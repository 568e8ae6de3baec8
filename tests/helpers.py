"""Shared test helpers, importable from the tests and from the scripts they run (as tests.helpers)."""


def fit_one(model, objective, cfg, x, y, x_val=None, y_val=None, seed=0, *, checkpoint_dir=None, config_hash="",
            on_epoch=None, measure=None):
    """:func:`fgsm_repro.train.fit` of one seed on arrays, checkpointing in `checkpoint_dir` if given."""
    return fit_many(model, objective, cfg, x, y, x_val, y_val, [seed], on_epoch=on_epoch, config_hash=config_hash,
                    checkpoint_dirs=None if checkpoint_dir is None else [checkpoint_dir], measure=measure)[0]


def fit_many(model, objective, cfg, x, y, x_val, y_val, seeds, *, checkpoint_dirs=None, config_hash="",
             on_epoch=None, measure=None):
    """:func:`fgsm_repro.train.fit` of several seeds on arrays, seed i checkpointing in checkpoint_dirs[i]."""
    from fgsm_repro.train import Checkpoints, Data, Trainer, fit

    dirs = dict(zip(seeds, checkpoint_dirs, strict=True)) if checkpoint_dirs else None
    return fit(Trainer(model, objective, cfg), Data(x, y, x_val, y_val), seeds, on_epoch=on_epoch, measure=measure,
               checkpoints=Checkpoints(dirs.__getitem__, config_hash) if dirs else None)


def toy_task(seed=0, n=600):
    """A learnable 8x8 two-class task: (x_train, y_train, x_val, y_val), 500 training examples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    y = (x[:, 2:5, 2:5, 0].mean((1, 2)) > x[:, 5:, 5:, 0].mean((1, 2))).astype(np.int32)
    return x[:500], y[:500], x[500:], y[500:]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`fgsm-repro ARGV` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from fgsm_repro import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            cli.main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, stdout.getvalue(), stderr.getvalue()


# Cases tried by the fuzz and property tests, by name: printed at the end of the test run (conftest's
# terminal summary) and quoted in docs/guarantees.md.
FUZZ_COUNTS: dict[str, int] = {}


def count_case(name: str) -> None:
    FUZZ_COUNTS[name] = FUZZ_COUNTS.get(name, 0) + 1


def key_paths(tree, prefix=()):
    """Every key path of a nested mapping (lists' items by index): where a fuzz test may mutate."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield (*prefix, key)
            yield from key_paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield (*prefix, i)
            yield from key_paths(value, (*prefix, i))


def random_softmax_regression(n: int, *, seed: int = 0, scale: float = 0.1):
    """An MNIST-shaped softmax regression with random weights (N(0, scale²)) and `n` random images
    with random labels: (model, objective, params, x, y) for attack tests through evaluation."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fgsm_repro.models import build_model

    model, objective = build_model("softmax_regression", {})
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
    params = jax.tree.map(lambda p: scale * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    return model, objective, params, x, y
