"""A single background worker thread that keeps disk writes (and host-side work) off the training step.

Training-time recorders hand it closures (``submit``); they run in order on one daemon thread. The queue is bounded,
so a writer slower than training applies back-pressure instead of growing memory. ``join`` waits for all submitted
work and re-raises the first error a job raised, so failures are never silent.

Example:
    >>> w = BackgroundWriter()
    >>> out = []
    >>> w.submit(out.append, 1)
    >>> w.join()
    >>> out
    [1]
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class BackgroundWriter:
    """Run submitted jobs in order on one worker thread (started lazily).

    Args:
        max_pending: jobs allowed to wait before ``submit`` blocks (back-pressure bound on memory).
    """

    def __init__(self, max_pending: int = 8):
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive int, got {max_pending!r}")
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                fn, args = job
                if self._error is None:
                    fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in join()
                self._error = e
            finally:
                self._queue.task_done()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; raises at once if an earlier job failed."""
        self._raise()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, daemon=True, name="hf_unlearn-recorder-writer")
            self._thread.start()
        self._queue.put((fn, args))

    def join(self) -> None:
        """Wait until every submitted job has run, then stop the thread; re-raise the first job error."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._thread = None
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"a background recorder write failed: {err!r}") from err
