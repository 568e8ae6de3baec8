"""Experiment registry: one module per paper table or figure.

Each module has ``CLAIMS`` (the claim IDs it measures) and
``run(cfg, splits, seed, ctx) -> Outcome``; its YAML config lives in ``configs/<name>.yaml``.
"""

from fgsm_repro.experiments import f2_logistic, t1_softmax, t2_maxout240

EXPERIMENTS = {
    "t1_softmax": t1_softmax,
    "f2_logistic": f2_logistic,
    "t2_maxout240": t2_maxout240,
}
