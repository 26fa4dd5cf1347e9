"""pace.Pace on a made-up clock: a run whose first epoch pays tracing, as a real one does."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmark import progress_errors  # noqa: E402  (scripts/benchmark.py)

from mnist_core.pace import (  # noqa: E402
    FORWARD_SPEEDUP,
    VALIDATION_TRACE_SHARE,
    XLA_VALIDATION_TRACE_SHARE,
    Pace,
)

EPOCHS, STEPS, SAMPLES, VALIDATION = 10, 100, 3200, 1000
STEP_SECONDS, PER_CALL = 0.01, 4  # Keras reports once per call of 4 steps
TRACE_TRAIN, TRACE_TEST, TEST_SECONDS = 5.0, 3.0, 0.1


def simulate(
    last_call_extra: float = 0.0,
) -> tuple[list[tuple[float, float | None, float | None, int]], float]:
    """Every report as (time, eta, samples per second, epoch), and the time the run ends; the first epoch's
    last call takes `last_call_extra` more (it traces the smaller last batch)."""
    pace, now, reports = Pace(EPOCHS, STEPS, SAMPLES, VALIDATION), 0.0, []
    for epoch in range(1, EPOCHS + 1):
        pace.epoch_begin(now)
        for step in range(PER_CALL, STEPS + 1, PER_CALL):
            now += PER_CALL * STEP_SECONDS + (TRACE_TRAIN if epoch == 1 and step == PER_CALL else 0.0)
            now += last_call_extra if epoch == 1 and step == STEPS else 0.0
            pace.batch_end(now, step)
            reports.append((now, pace.eta(), pace.samples_per_second(), epoch))
        pace.train_end()
        seconds = TEST_SECONDS + (TRACE_TEST if epoch == 1 else 0.0)
        now += seconds
        pace.validation_end(seconds)
    return reports, now


def test_after_the_first_epoch_rate_and_time_left_are_within_a_fifth():
    reports, end = simulate()
    true_rate = SAMPLES / (STEPS * STEP_SECONDS)
    later = [(now, eta, rate) for now, eta, rate, epoch in reports if epoch > 1]
    assert later
    for now, eta, rate in later:
        assert eta == pytest.approx(end - now, rel=0.2), f"at {now:.2f} s"
        assert rate == pytest.approx(true_rate, rel=0.2)
    # Epoch 1's own time (tracing included) is 4.6x an untraced epoch: reckoning by it would be far off.
    first_epoch = STEPS * STEP_SECONDS + TRACE_TRAIN + TRACE_TEST + TEST_SECONDS
    assert first_epoch * (EPOCHS - 1) > 2 * (end - later[0][0])


def test_one_slow_call_does_not_set_the_pace():
    # The first epoch's last call traces the smaller last batch: 2 s, twice a whole later epoch.
    reports, end = simulate(last_call_extra=2.0)
    assert any(epoch == 2 for *_, epoch in reports)
    for now, eta, rate, epoch in reports:
        if epoch > 1:
            assert eta == pytest.approx(end - now, rel=0.2), f"at {now:.2f} s"
            assert rate == pytest.approx(SAMPLES / (STEPS * STEP_SECONDS), rel=0.2)


def test_no_time_left_before_a_pace_is_known_and_none_after_the_end():
    reports, end = simulate()
    first_time, first_eta, first_rate, _ = reports[0]
    assert first_eta is None, "the first call carries the tracing: no honest pace yet"
    assert first_rate == pytest.approx(PER_CALL * SAMPLES / STEPS / first_time)
    assert reports[1][1] is not None
    last_time, last_eta, _, _ = reports[-1]
    assert last_eta == pytest.approx(end - last_time, rel=0.2)  # the last validation is still to come


def test_a_validation_is_estimated_until_an_untraced_one_is_timed():
    pace = Pace(3, 10, 1000, 600)
    assert pace.validation_seconds(100.0) == pytest.approx(600 / (FORWARD_SPEEDUP * 100.0))
    pace.validation_end(0.5)  # the traced first one caps the estimate
    assert pace.validation_seconds(100.0) == 0.5
    pace.validation_end(1.5)  # a later one is the figure
    assert pace.validation_seconds(100.0) == 1.5


@pytest.mark.parametrize("xla, share", [(False, VALIDATION_TRACE_SHARE), (True, XLA_VALIDATION_TRACE_SHARE)])
def test_the_first_validation_is_expected_to_trace_a_share_of_what_the_first_call_did(xla, share):
    # 1 epoch of 10 calls of 10 steps (100 images each, 0.1 s a call) and a validation of 300 images;
    # the first call takes 4 s more: its tracing.
    pace = Pace(1, 100, 1000, 300, xla=xla)
    pace.epoch_begin(0.0)
    pace.batch_end(4.1, 10)
    pace.batch_end(4.2, 20)
    rate = 1000.0  # images a second, from the second call
    validation = 300 / (FORWARD_SPEEDUP * rate)
    assert pace.eta() == pytest.approx(800 / rate + validation + share * 4.0)


@pytest.mark.parametrize("args", [(0, 10, 100, 10), (3, 0, 100, 10), (3, 10, 0, 10), (3, 10, 100, -1)])
def test_impossible_runs_are_refused(args):
    with pytest.raises(ValueError, match="Pace needs"):
        Pace(*args)


def test_the_benchmark_scores_a_progress_line_against_what_the_run_took():
    def batch(epoch, elapsed, eta, rate):
        return {
            "type": "batch",
            "epoch": epoch,
            "elapsed": elapsed,
            "eta_seconds": eta,
            "samples_per_second": rate,
        }

    def epoch(number, elapsed):
        return {
            "type": "epoch",
            "epoch": number,
            "elapsed": elapsed,
            "epoch_seconds": 10.0,
            "train_seconds": 8.0,
        }

    records = [
        batch(1, 2.0, None, 50.0),  # the first epoch is not scored
        epoch(1, 10.0),
        batch(2, 14.0, 6.0, 100.0),  # 6 s left shown, 6 s taken; 100/s shown, 800 images in 8 s
        batch(2, 16.0, 6.0, 120.0),  # 6 shown, 4 taken: +50%; 120/s: +20%
        batch(2, 18.0, None, None),  # no figure shown counts as wrong
        epoch(2, 20.0),
    ]
    errors = progress_errors(records, samples=800)
    assert errors["eta_error"]["records"] == 3 and errors["eta_error"]["median"] == pytest.approx(0.5)
    assert errors["eta_error"]["within_20_percent"] == pytest.approx(1 / 3)
    assert errors["rate_error"]["median"] == pytest.approx(0.2)
    assert errors["rate_error"]["max"] == float("inf")
    assert errors["eta_error_before_last_epoch"] is None  # every scored record is in the last epoch
