"""The paper's numbers and the tolerance bands: the one place they live.

Source: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples",
ICLR 2015 (arXiv:1412.6572v3), as transcribed with claim IDs and bands in
``shared/reference/paper-targets.md``. Every value is a percentage unless ``unit`` says otherwise.
Nothing measured lives here; measured values come from ``results/*.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Absolute tolerance bands, in percentage points (paper-targets.md, "Tolerances").
BANDS: dict[str, float | None] = {
    "clean_mnist": 0.25,  # clean test error on MNIST (values below 2%)
    "clean_cifar": 2.0,
    "adversarial": 5.0,  # adversarial error, agreement and transfer percentages
    "confidence": 5.0,  # confidences and probabilities
    "rubbish": 10.0,  # rubbish-class rates and fooling success rates
    "qualitative": None,  # the stated behaviour holds, shown by a number
    "figure": None,  # produced from the run and shown in the report
}


@dataclass(frozen=True)
class Target:
    """One number (or figure) of the paper that a measurement is compared with."""

    claim: str  # claim ID from paper-targets.md, e.g. "T1.softmax"
    metric: str  # key of the measured value in a results file
    paper: float | None  # the paper's value (None for figures / qualitative claims)
    kind: str  # key of BANDS
    description: str
    note: str = ""
    # The paper's rate whose positives this number is of (a confidence on mistakes, a share of false
    # positives): the paper's sample is that rate's count, not the whole set (fgsm_repro.sampling).
    among: tuple[str, str] | None = None

    @property
    def band(self) -> float | None:
        return BANDS[self.kind]

    def within(self, measured: float) -> bool | None:
        if self.paper is None or self.band is None:
            return None
        # A tiny epsilon so that a value exactly on the band edge counts as within.
        return abs(measured - self.paper) <= self.band + 1e-9


_CONF_NOTE_T1 = (
    "The paper says 'average confidence' without saying over which examples; compared on "
    "misclassified adversarial examples, the all-examples mean is shown beside it."
)

TARGETS: tuple[Target, ...] = (
    # §4, Table-like claims on shallow and deep models.
    Target("T1.softmax", "error", 99.9, "adversarial",
           "shallow softmax regression, MNIST, FGSM eps=.25: error"),
    Target("T1.softmax", "confidence_mistakes", 79.3, "confidence",
           "shallow softmax regression, FGSM eps=.25: average confidence", _CONF_NOTE_T1,
           among=("T1.softmax", "error")),
    Target("T1.maxout", "error", 89.4, "adversarial", "maxout MLP, FGSM eps=.25: error"),
    Target("T1.maxout", "confidence_mistakes", 97.6, "confidence",
           "maxout MLP, FGSM eps=.25: average confidence", _CONF_NOTE_T1, among=("T1.maxout", "error")),
    Target("T1.convmaxout", "error", 87.15, "adversarial",
           "conv maxout, CIFAR-10 (GCN+ZCA), FGSM eps=.1: error"),
    Target("T1.convmaxout", "wrong_label_probability", 96.6, "confidence",
           "conv maxout, FGSM eps=.1: average probability on the wrong label"),
    Target("T1.convmaxout", "clean_error", 9.38, "clean_cifar",
           "conv maxout recipe (pylearn2 cifar10.yaml), with its augmentation: clean test error",
           "The maxout paper's published error for this recipe; 11.68% without augmentation."),
    # Fig. 2: logistic regression on 3s vs 7s.
    Target("F2.clean", "error", 1.6, "clean_mnist", "logistic regression 3 vs 7: clean test error"),
    Target("F2.adv", "error", 99.0, "adversarial",
           "logistic regression 3 vs 7, FGSM eps=.25 (exact): error"),
    Target("F2.images", "figure", None, "figure",
           "weights, sign(weights), clean and adversarial 3s and 7s"),
    # §5
    Target("S5.l1", "train_error", None, "qualitative",
           "L1 weight decay .0025 on the first layer: training error stuck above 5%"),
    # §6, adversarial training of maxout networks.
    Target("T2.clean240", "error", 0.94, "clean_mnist", "maxout 240, no adversarial training"),
    Target("T2.adv240", "error", 0.84, "clean_mnist", "maxout 240, adversarial training"),
    Target("T2.clean1600", "error", 1.14, "clean_mnist", "maxout 1600, no adversarial training"),
    Target("T2.adv1600", "error", 0.782, "clean_mnist",
           "maxout 1600, adversarial training, mean of 5 seeds (0.77, 0.77, 0.77, 0.77, 0.83)"),
    Target("T2.adverr", "error_naive", 89.4, "adversarial",
           "FGSM eps=.25 error without adversarial training"),
    Target("T2.adverr", "error_adv_trained", 17.9, "adversarial",
           "FGSM eps=.25 error with adversarial training"),
    Target("T2.transfer_a", "error", 19.6, "adversarial",
           "adv.-trained model on FGSM from the original model"),
    Target("T2.transfer_b", "error", 40.9, "adversarial",
           "original model on FGSM from the adv.-trained model"),
    Target("T2.conf", "confidence_mistakes", 81.4, "confidence",
           "adv.-trained model, own FGSM: confidence on misclassified", among=("T2.adverr", "error_adv_trained")),
    Target("S6.noise_sign", "error", 86.2, "adversarial", "trained with +-eps sign noise: FGSM error"),
    Target("S6.noise_sign", "confidence_mistakes", 97.3, "confidence",
           "trained with +-eps sign noise: FGSM confidence", among=("S6.noise_sign", "error")),
    Target("S6.noise_uniform", "error", 90.4, "adversarial", "trained with U(-eps,eps) noise: FGSM error"),
    Target("S6.noise_uniform", "confidence_mistakes", 97.8, "confidence",
           "trained with U(-eps,eps) noise: FGSM confidence", among=("S6.noise_uniform", "error")),
    Target("F3.weights", "figure", None, "figure", "first-layer weights, naive vs adv.-trained maxout"),
    # §7, §8
    Target("S7.rbf", "error", 55.4, "adversarial", "shallow RBF network, FGSM eps=.25: error"),
    Target("S7.rbf", "confidence_mistakes", 1.2, "confidence", "RBF: confidence on mistakes",
           among=("S7.rbf", "error")),
    Target("S7.rbf", "confidence_clean", 60.6, "confidence", "RBF: average confidence on clean test"),
    Target("S8.agree_rbf", "agreement", 16.0, "adversarial", "RBF predicts maxout's wrong class",
           among=("T1.maxout", "error")),
    Target("S8.agree_softmax", "agreement", 54.6, "adversarial",
           "softmax predicts maxout's wrong class", among=("T1.maxout", "error")),
    Target("S8.both_softmax", "agreement", 84.6, "adversarial",
           "both wrong: softmax matches maxout's class"),
    Target("S8.both_rbf", "agreement", 54.3, "adversarial", "both wrong: RBF matches maxout's class"),
    Target("S8.rbf_softmax", "agreement", 53.6, "adversarial", "both wrong: RBF matches softmax's class"),
    Target("F4.sweep", "figure", None, "qualitative", "logits piecewise linear in eps"),
    # §9
    Target("S9.mpdbm", "clean_error", 0.88, "clean_mnist", "MP-DBM clean error"),
    Target("S9.mpdbm", "error", 97.5, "adversarial", "MP-DBM FGSM eps=.25 error"),
    Target("S9.ens_all", "error", 91.1, "adversarial", "12-maxout ensemble, FGSM on the ensemble"),
    Target("S9.ens_one", "error", 87.9, "adversarial", "12-maxout ensemble, FGSM on one member"),
    # Appendix A: rubbish-class examples.
    Target("A.rubbish_maxout", "rate", 98.35, "rubbish", "naive maxout on Gaussian noise"),
    Target("A.rubbish_maxout", "confidence", 92.8, "confidence", "naive maxout: confidence",
           among=("A.rubbish_maxout", "rate")),
    Target("A.rubbish_sigmoid", "rate", 68.0, "rubbish", "maxout with sigmoid outputs"),
    Target("A.rubbish_sigmoid", "confidence", 87.9, "confidence", "maxout sigmoid: confidence",
           among=("A.rubbish_sigmoid", "rate")),
    Target("A.rubbish_softmaxreg", "rate", 59.8, "rubbish", "softmax regression on noise"),
    Target("A.rubbish_softmaxreg", "confidence", 70.8, "confidence", "softmax regression: confidence",
           among=("A.rubbish_softmaxreg", "rate")),
    Target("A.rubbish_rbf", "rate", 0.0, "rubbish", "RBF network on noise"),
    Target("A.rubbish_cifar", "rate", 93.4, "rubbish", "conv maxout on CIFAR-sized noise"),
    Target("A.rubbish_cifar", "confidence", 84.4, "confidence", "conv maxout: confidence",
           among=("A.rubbish_cifar", "rate")),
    Target("A.rubbish_skew", "mnist_share_5", 45.3, "rubbish", "share of MNIST false positives that are '5'",
           among=("A.rubbish_maxout", "rate")),
    Target("A.rubbish_skew", "cifar_share_frog", 49.7, "rubbish", "share of CIFAR false positives 'frog'",
           among=("A.rubbish_cifar", "rate")),
    Target("A.fooling", "mean_success", 75.3, "rubbish", "targeted fooling, mean over classes"),
    Target("A.fooling", "airplane_success", 24.7, "rubbish", "targeted fooling toward airplane"),
    Target("A.rubbish_train", "rubbish_error", None, "qualitative",
           "maxout trained on rubbish reaches 0% error on it"),
    Target("F1.panda", "figure", None, "figure",
           "GoogLeNet panda -> gibbon (needs ImageNet weights: out of reach offline)"),
    # Beyond the paper (no paper value): what its two transfer cells and its one eps suggest.
    Target("X.transfer_matrix", "figure", None, "figure",
           "beyond the paper: FGSM eps=.25 made on each MNIST model, error on every other (heat map)"),
    Target("X.robustness", "figure", None, "figure",
           "beyond the paper: FGSM error vs eps in [0, .3] for every MNIST model"),
    Target("X.attacks", "figure", None, "figure",
           "beyond the paper: FGM, BIM, PGD, DeepFool, JSMA, C&W on the naive and the adversarially trained maxout"),
    Target("X.attack_curves", "figure", None, "figure",
           "beyond the paper: error vs L-inf eps (FGSM, BIM, PGD) and vs L2 budget (DeepFool, C&W), both maxouts"),
    Target("X.robust_eval", "figure", None, "figure",
           "beyond the paper: every MNIST model and PGD / fast / TRADES training under FGSM, PGD-40 and "
           "AutoAttack at eps .1-.3, with training cost"),
    Target("X.catastrophic_overfitting", "figure", None, "figure",
           "beyond the paper: PGD error on held-out images per epoch along the adversarial trainings"),
)


def targets_for(claim: str) -> list[Target]:
    return [t for t in TARGETS if t.claim == claim]


def target(claim: str, metric: str) -> Target:
    """The paper's number `metric` of `claim`."""
    return next(t for t in TARGETS if t.claim == claim and t.metric == metric)


def claim_ids() -> list[str]:
    """All claim IDs, in the paper's order, without repetition."""
    return list(dict.fromkeys(t.claim for t in TARGETS))
