"""hf_unlearn.utils.background.BackgroundWriter: order, back-pressure bound, and errors that are never silent."""

from __future__ import annotations

import threading

import pytest

from hf_unlearn.utils.background import BackgroundWriter


def test_jobs_run_in_order_off_the_calling_thread():
    w = BackgroundWriter(max_pending=2)
    seen: list[tuple[int, str]] = []
    for i in range(20):
        w.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    w.join()
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"hf_unlearn-recorder-writer"}
    w.submit(seen.append, (20, "again"))  # usable again after join (a new thread starts)
    w.join()
    assert seen[-1] == (20, "again")


def test_a_failing_job_is_reraised_and_later_jobs_are_skipped():
    w = BackgroundWriter()
    ran: list[int] = []

    def boom() -> None:
        raise OSError("disk full")

    w.submit(boom)
    w.submit(ran.append, 1)
    with pytest.raises(RuntimeError, match="disk full"):
        w.join()
    assert ran == []
    with pytest.raises(ValueError, match="max_pending"):
        BackgroundWriter(max_pending=0)
