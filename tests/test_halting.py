"""Halting policies on hand-made KL/agreement sequences."""

import numpy as np
import pytest

from edgekd.distill.halting import EpochHalter, HaltingConfig, SettleTracker
from edgekd.errors import EdgekdError


def visit(tracker, kls, agrees):
    ids = np.arange(len(kls))
    return tracker.observe(ids, np.array(kls, np.float32), np.array(agrees, bool))


def test_settles_after_patience_consecutive_good_visits():
    t = SettleTracker(3, HaltingConfig(eps=0.1, patience=3))
    # sample 0: always good; 1: good but disagrees once; 2: KL too high once
    seq = [([0.01, 0.01, 0.2], [True, True, True]),
           ([0.01, 0.01, 0.05], [True, False, True]),
           ([0.01, 0.01, 0.05], [True, True, True])]
    settled = [visit(t, k, a).tolist() for k, a in seq]
    assert settled == [[], [], [0]]
    assert visit(t, [0.01, 0.01, 0.05], [True, True, True]).tolist() == [2]
    assert visit(t, [0.01, 0.01, 0.05], [True, True, True]).tolist() == [1]
    assert t.settled.tolist() == [True, True, True]


def test_a_bad_visit_resets_the_streak():
    t = SettleTracker(1, HaltingConfig(eps=0.1, patience=2))
    out = [visit(t, [k], [True]).tolist() for k in (0.05, 0.5, 0.05, 0.05)]
    assert out == [[], [], [], [0]]


def test_boundary_eps_counts_as_settled():
    t = SettleTracker(1, HaltingConfig(eps=0.25, patience=1))
    assert visit(t, [0.25], [True]).tolist() == [0]


def test_settled_sample_is_reported_once():
    t = SettleTracker(1, HaltingConfig(eps=0.1, patience=1))
    assert visit(t, [0.0], [True]).tolist() == [0]
    assert visit(t, [0.0], [True]).tolist() == []


def test_disabled_halting_never_settles():
    t = SettleTracker(2, HaltingConfig(enabled=False, eps=1.0, patience=1))
    for _ in range(5):
        assert visit(t, [0.0, 0.0], [True, True]).size == 0
    assert not t.settled.any()


def test_a_probe_that_no_longer_meets_the_rule_unsettles():
    t = SettleTracker(4, HaltingConfig(eps=0.1, patience=1))
    visit(t, [0.0] * 4, [True] * 4)
    ids = np.arange(4)
    woken = t.probe(ids, np.array([0.05, 0.1, 0.2, 0.0], np.float32),
                    np.array([True, True, True, False]))
    assert woken.tolist() == [2, 3]      # drifted past eps; argmax no longer agreeing
    assert t.settled.tolist() == [True, True, False, False] and t.streak[2:].tolist() == [0, 0]
    # the relative threshold scales the probe's limit with the teacher's information
    t = SettleTracker(2, HaltingConfig(eps=0.1, patience=1, threshold="relative"))
    visit(t, [0.0, 0.0], [True, True])
    woken = t.probe(np.arange(2), np.array([0.15, 0.15], np.float32), np.array([True, True]),
                    info=np.array([2.0, 1.0], np.float32))
    assert woken.tolist() == [1]


def test_wake_unsettles_drifted_rehearsals_only_under_wake():
    for policy, expect in (("wake", [1]), ("rehearse", []), ("skip", [])):
        t = SettleTracker(2, HaltingConfig(eps=0.1, patience=1, policy=policy, eps_wake=0.3))
        visit(t, [0.0, 0.0], [True, True])
        woken = t.rehearse(np.array([0, 1]), np.array([0.2, 0.5], np.float32))
        assert woken.tolist() == expect
        assert t.settled.tolist() == [True, not expect]
        if expect:
            assert t.streak[1] == 0


def test_epoch_halter_settled_fraction():
    h = EpochHalter(HaltingConfig(rho=0.9))
    assert h.after_epoch(0.5, None) is None
    assert h.after_epoch(0.9, None).startswith("settled")


def test_epoch_halter_plateau_counts_epochs_without_delta_improvement():
    h = EpochHalter(HaltingConfig(rho=1.0, delta=0.01, patience_epochs=3))
    scores = [0.50, 0.60, 0.605, 0.609, 0.62, 0.62, 0.625, 0.629]
    reasons = [h.after_epoch(0.0, s) for s in scores]
    # 0.605 and 0.609 do not beat 0.60 by 0.01; 0.62 does; then three stale epochs
    assert reasons[:7] == [None] * 7
    assert reasons[7].startswith("plateau")


def test_epoch_halter_off_without_halting_but_budgets_hold():
    h = EpochHalter(HaltingConfig(enabled=False, rho=0.1, byte_budget=100, time_budget_s=5))
    assert h.after_epoch(1.0, 0.0) is None
    assert h.budget(99, 1) is None
    assert h.budget(100, 1).startswith("byte-budget")
    assert h.budget(0, 5.0).startswith("time-budget")


def test_state_round_trip():
    h = EpochHalter(HaltingConfig(patience_epochs=2))
    h.after_epoch(0, 0.5)
    h.after_epoch(0, 0.5)
    h2 = EpochHalter(HaltingConfig(patience_epochs=2))
    h2.load_state(h.state())
    assert h2.after_epoch(0, 0.5).startswith("plateau")


@pytest.mark.parametrize("bad", [{"policy": "nope"}, {"rho": 1.5}, {"eps": -1}, {"patience": 0},
                                 {"policy": "wake", "eps": 0.5, "eps_wake": 0.1},
                                 {"eps": float("nan")}])
def test_bad_config_is_refused(bad):
    with pytest.raises(EdgekdError):
        HaltingConfig(**bad).check()


def test_plateau_on_a_lower_is_better_signal():
    h = EpochHalter(HaltingConfig(rho=1.0, delta=0.01, patience_epochs=2), "validation kl",
                    lower_is_better=True)
    reasons = [h.after_epoch(0.0, kl) for kl in (0.5, 0.3, 0.295, 0.31)]
    assert reasons[:3] == [None] * 3
    assert reasons[3] == "plateau: validation kl did not improve by 0.01 for 2 epochs (best 0.3000)"


def test_the_relative_threshold_scales_eps_with_what_the_teacher_says():
    """observe(info=): under the relative threshold a sample settles when its KL is at most
    eps times the teacher's information (log C - H(p_T)); the same KL is too much for a soft
    teacher and enough for a confident one. The absolute threshold ignores info."""
    from edgekd.distill.losses import teacher_information
    soft = np.array([[8.0, 0.0, 0.0, 0.0],      # confident teacher: much information
                     [0.4, 0.0, 0.0, 0.0]],     # near-uniform teacher: little
                    np.float32)
    info = teacher_information(soft, 4.0)
    assert info[0] > 10 * info[1] > 0
    kl = np.float32(0.5) * np.array([0.02 * info[0], 0.02 * info[0]], np.float32)
    rel = SettleTracker(2, HaltingConfig(eps=0.02, patience=1, threshold="relative"))
    assert rel.observe(np.arange(2), kl, np.ones(2, bool), info=info).tolist() == [0]
    at_limit = np.array([0.02 * info[1]], np.float32)   # exactly eps * info settles
    assert rel.observe(np.array([1]), at_limit, np.ones(1, bool), info=info[1:]).tolist() == [1]
    absolute = SettleTracker(2, HaltingConfig(eps=0.02, patience=1, threshold="absolute"))
    assert absolute.observe(np.arange(2), kl, np.ones(2, bool), info=info).tolist() == [0, 1]
    # without info (the teacher's soft label unknown) the relative rule falls back to eps
    plain = SettleTracker(1, HaltingConfig(eps=0.02, patience=1, threshold="relative"))
    assert plain.observe(np.array([0]), np.array([0.03], np.float32), np.ones(1, bool)).size == 0
