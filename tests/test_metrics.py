import numpy as np
import pytest

from fgsm_repro.metrics import error_rate, mean_confidence, per_class_error, summarize
from fgsm_repro.reference import TARGETS, Target, claim_ids


def test_metrics_on_hand_made_inputs():
    pred = np.array([0, 1, 2, 2, 1])
    labels = np.array([0, 1, 1, 2, 0])
    conf = np.array([0.9, 0.8, 0.6, 0.7, 0.5])
    assert error_rate(pred, labels) == pytest.approx(40.0)
    assert mean_confidence(conf) == pytest.approx(70.0)
    assert mean_confidence(conf, pred != labels) == pytest.approx(55.0)
    assert per_class_error(pred, labels) == {"0": 50.0, "1": 50.0, "2": 0.0}
    s = summarize(pred, conf, labels)
    assert s["error"] == pytest.approx(40.0) and s["confidence_mistakes"] == pytest.approx(55.0)


def test_no_mistakes_gives_no_mistake_confidence():
    assert summarize(np.array([1, 2]), np.array([0.5, 0.5]), np.array([1, 2]))["confidence_mistakes"] is None


def test_tolerance_bands():
    t = Target("X", "error", 99.0, "adversarial", "")
    assert t.within(94.0) and t.within(104.0) and not t.within(93.9)
    assert Target("X", "error", 1.6, "clean_mnist", "").within(1.85)
    assert not Target("X", "error", 1.6, "clean_mnist", "").within(1.86)


def test_every_claim_of_paper_targets_is_in_the_reference():
    ids = set(claim_ids())
    for expected in ("T1.softmax", "T1.maxout", "F2.clean", "F2.adv", "F2.images", "T2.adv1600", "S9.ens_all",
                     "A.fooling", "F1.panda"):
        assert expected in ids
    assert len({(t.claim, t.metric) for t in TARGETS}) == len(TARGETS)


def test_a_claim_measured_in_parts_reads_each_metric_from_the_record_that_has_it():
    """A.rubbish_skew is measured on MNIST by one experiment and on CIFAR-10 by another."""
    from fgsm_repro.report import target_records

    def record(name, profile, metrics):
        return {"name": name, "provenance": {"profile": profile}, "measured": {"A.rubbish_skew": metrics}}

    mnist = record("a_rubbish_mnist", "fast", {"mnist_share_5": 40.0})
    cifar = record("a_rubbish_cifar", "paper", {"cifar_share_frog": 50.0})
    mnist_ci = record("a_rubbish_mnist", "ci", {"mnist_share_5": 30.0})
    chosen = target_records([cifar, mnist, mnist_ci])
    by_metric = {t.metric: rec for t, rec in chosen.items() if t.claim == "A.rubbish_skew"}
    assert by_metric == {"mnist_share_5": mnist, "cifar_share_frog": cifar}
    assert target_records([mnist_ci]) == {} and target_records([mnist_ci], include_ci=True)
