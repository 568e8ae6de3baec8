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
