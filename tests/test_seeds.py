"""Several seeds trained together in one vmapped program: the same runs as one seed at a time."""

import jax
import numpy as np
import pytest

from fgsm_repro.models import MaxoutMLP
from fgsm_repro.objectives import SOFTMAX
from tests.helpers import fit_many, fit_one
from tests.test_maxout import TINY, _recipe, _toy

SEEDS = [0, 1, 2]


def _assert_close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a subprocess or a long training
@pytest.mark.parametrize("second_stage", ["stage2", "retrain"])
def test_seeds_together_are_the_seeds_alone(second_stage):
    extra = {"stage2": {"max_epochs": 3}} if second_stage == "stage2" else {"stage2": None, "retrain_on_all": True}
    fast = dict(name="classical_momentum", learning_rate=0.5, lr_decay_factor=1.0001, momentum=0.5,
                final_momentum=0.7, momentum_saturate_epoch=4, min_learning_rate=1e-6)
    cfg = _recipe(epochs=12, early_stopping_patience=2, early_stopping_on="adversarial_error", optimizer=fast, **extra)
    model, data = MaxoutMLP(**TINY), _toy()
    together = fit_many(model, SOFTMAX, cfg, *data, SEEDS)
    alone = [fit_one(model, SOFTMAX, cfg, *data, seed=s) for s in SEEDS]
    # The seeds stop at different epochs, so some train on after others have left the batch.
    assert len({r.epochs_run for r in alone}) > 1
    for t, a in zip(together, alone, strict=True):
        assert (t.epochs_run, t.best_epoch, t.stage2_epochs, t.retrain_epochs) == (
            a.epochs_run, a.best_epoch, a.stage2_epochs, a.retrain_epochs)
        assert [r["val_error"] for r in t.history if "val_error" in r] == [
            r["val_error"] for r in a.history if "val_error" in r]
        _assert_close(t.params, a.params)
    assert max(r.get("seeds_together", 1) for r in together[0].history) == len(SEEDS)


@pytest.mark.slow  # a subprocess or a long training
def test_a_seed_checkpointed_alone_resumes_among_others(tmp_path):
    cfg = _recipe(epochs=5, early_stopping_patience=None, stage2=None, checkpoint_every=1)
    model, data = MaxoutMLP(**TINY), _toy()
    seen = []

    def interrupt(record, params):
        seen.append(record)
        if len(seen) == 4:  # seed 1 alone: 3 epochs checkpointed, the 4th lost
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_one(model, SOFTMAX, cfg, *data, seed=1, checkpoint_dir=tmp_path / "seed1", config_hash="h",
                on_epoch=interrupt)
    trained = []
    resumed = fit_many(model, SOFTMAX, cfg, *data, [0, 1], checkpoint_dirs=[tmp_path / "seed0", tmp_path / "seed1"],
                        config_hash="h", on_epoch=lambda r, p: trained.append((r["seed"], r["epoch"])))
    assert sorted(trained) == [(0, e) for e in range(1, 6)] + [(1, 4), (1, 5)]
    for r, s in zip(resumed, [0, 1], strict=True):
        _assert_close(r.params, fit_one(model, SOFTMAX, cfg, *data, seed=s).params)
