"""The TrainingRun timer holds no finalizer: it stops when the run leaves the runs_in_flight index (deletion)."""

from __future__ import annotations


def test_the_timer_is_registered_without_a_finalizer() -> None:
    import kopf

    import mloop.handlers  # noqa: F401 - registers the handlers
    from mloop.handlers.trainingrun import trainingrun_tick

    timers = [h for h in kopf.get_default_registry()._spawning.get_all_handlers() if h.fn is trainingrun_tick]
    assert len(timers) == 1 and timers[0].requires_finalizer is False


def test_the_timer_visits_runs_in_flight_that_are_still_indexed() -> None:
    from mloop.handlers.trainingrun import _timer_visits

    assert _timer_visits(uid="u", status={"phase": "Pending"}, runs_in_flight={"u": [True]})
    assert not _timer_visits(uid="u", status={"phase": "Pending"}, runs_in_flight={})  # deleted: out of the index
    assert not _timer_visits(uid="u", status={"phase": "Succeeded"}, runs_in_flight={"u": [True]})
    assert _timer_visits(uid="u", status={"phase": "Succeeded", "mlflow": {"state": "Pending"}},
                         runs_in_flight={"u": [True]})
