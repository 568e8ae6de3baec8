"""Experiment registry: one module per paper table or figure.

Each module has ``CLAIMS`` (the claim IDs it measures) and
``run(cfg, splits, seed, ctx) -> Outcome``; its YAML config lives in ``configs/<name>.yaml``.
"""

from fgsm_repro.experiments import f2_logistic, s5_l1, s6_noise, t1_softmax, t2_maxout240, t2_maxout1600

EXPERIMENTS = {
    "t1_softmax": t1_softmax,
    "f2_logistic": f2_logistic,
    "t2_maxout240": t2_maxout240,
    "t2_maxout1600": t2_maxout1600,
    "s6_noise": s6_noise,
    "s5_l1": s5_l1,
}
