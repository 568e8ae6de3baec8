"""Shared test helpers, importable from the tests and from the scripts they run (as tests.helpers)."""


def fit_one(model, objective, cfg, x, y, x_val=None, y_val=None, seed=0, *, checkpoint_dir=None, config_hash="",
            on_epoch=None):
    """:func:`fgsm_repro.train.fit` of one seed on arrays, checkpointing in `checkpoint_dir` if given."""
    return fit_many(model, objective, cfg, x, y, x_val, y_val, [seed], on_epoch=on_epoch, config_hash=config_hash,
                    checkpoint_dirs=None if checkpoint_dir is None else [checkpoint_dir])[0]


def fit_many(model, objective, cfg, x, y, x_val, y_val, seeds, *, checkpoint_dirs=None, config_hash="",
             on_epoch=None):
    """:func:`fgsm_repro.train.fit` of several seeds on arrays, seed i checkpointing in checkpoint_dirs[i]."""
    from fgsm_repro.train import Checkpoints, Data, Trainer, fit

    dirs = dict(zip(seeds, checkpoint_dirs, strict=True)) if checkpoint_dirs else None
    return fit(Trainer(model, objective, cfg), Data(x, y, x_val, y_val), seeds, on_epoch=on_epoch,
               checkpoints=Checkpoints(dirs.__getitem__, config_hash) if dirs else None)
