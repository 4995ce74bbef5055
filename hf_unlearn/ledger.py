"""A durable record of deletion requests and of what was done for each (SQLite, WAL, one transaction per change).

Life of a request::

    received --(apply_request: model changed in memory, hashes recorded)--> applying
             --(model folder saved atomically)--> applied --(evaluation evidence)--> verified
    any state but verified --(error)--> failed

Only hashes of the uids are needed for certificates; the uids themselves sit in a separate table
(``request_uids``) that the operator may purge (:meth:`Ledger.purge_uids`) once a request is done. The ledger never
stores example text.

Crash safety: every status change is one SQLite transaction (WAL journal, ``synchronous=FULL``); the model save
is atomic (:mod:`hf_unlearn.utils.atomic`); the hash the new weights will have is written BEFORE the save. After a
crash, :meth:`Ledger.recover` compares the hash of the weights on disk with the recorded before/after hashes and
says, for each pending request, whether its save landed (then it can be marked applied) or not (apply it again).

Concurrency: applies to one model folder are serialised by an exclusive file lock beside the folder
(:func:`folder_lock`), and the folder's hash is compared with the hash the change was computed from right before
the swap (compare-and-swap): two requests applied at once to one folder both land, one after the other. Status
changes are compare-and-swap on a per-request version, so a second apply of the same request fails with a clear
error and never turns an applied request into a failed one.

Evidence is stored as numbers only (no generated text), and :meth:`Ledger.purge_uids` scrubs every text field
that could quote the forgotten examples; SQLite's ``secure_delete`` overwrites the freed bytes.

Example:
    >>> import tempfile, os
    >>> led = Ledger(os.path.join(tempfile.mkdtemp(), "ledger.db"))
    >>> rid = led.submit(["u001", "u002"], method="grad_diff", requester="dpo@example.org", reason="GDPR art. 17")
    >>> led.get(rid)["status"]
    'received'
    >>> led.mark_applied(rid, {"steps": 3}, hash_before="a" * 64, hash_after="b" * 64)
    >>> [r["request_id"] for r in led.pending()]
    []
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hf_unlearn.utils.hashing import uid_hash, uids_digest, weights_hash

STATUSES = ("received", "applying", "applied", "verified", "failed")
PENDING = ("received", "applying")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id   TEXT PRIMARY KEY,
    method       TEXT NOT NULL,
    requester    TEXT,
    reason       TEXT,
    status       TEXT NOT NULL,
    n_uids       INTEGER NOT NULL,
    uids_digest  TEXT NOT NULL,
    changes      TEXT,
    hash_before  TEXT,
    hash_after   TEXT,
    evidence     TEXT,
    error        TEXT,
    target       TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    applied_at   TEXT,
    verified_at  TEXT
);
CREATE TABLE IF NOT EXISTS request_uid_hashes (
    request_id TEXT NOT NULL REFERENCES requests(request_id),
    uid_hash   TEXT NOT NULL,
    PRIMARY KEY (request_id, uid_hash)
);
CREATE TABLE IF NOT EXISTS request_uids (
    request_id TEXT NOT NULL REFERENCES requests(request_id),
    uid        TEXT NOT NULL,
    PRIMARY KEY (request_id, uid)
);
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    at         TEXT NOT NULL,
    status     TEXT NOT NULL,
    note       TEXT
);
CREATE TABLE IF NOT EXISTS followups (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL REFERENCES requests(request_id),
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    details     TEXT,
    hash_before TEXT,
    hash_after  TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS requests_status ON requests(status);
"""


class LedgerError(ValueError):
    """The ledger file cannot be used (not SQLite, corrupt, read-only for a write, not a hf_unlearn ledger)."""


class ApplyConflictError(RuntimeError):
    """Another process changed the request or its model folder meanwhile: nothing was saved, the request's
    status is unchanged (apply again, or look at it with ``ledger show``)."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, timeout: float | None = None) -> Iterator[Path]:
    """Exclusive inter-process lock of a model folder (``fcntl.flock`` on ``.<name>.hf_unlearn.lock`` beside it).

    The lock file lives beside the folder (the folder itself is replaced by atomic swaps) and is never removed.

    Args:
        folder: the model folder.
        timeout: seconds to wait (default: forever).

    Raises:
        TimeoutError: naming the folder, when ``timeout`` passed.

    Example:
        >>> import tempfile, os
        >>> with folder_lock(os.path.join(tempfile.mkdtemp(), "model")) as lock:
        ...     lock.name
        '.model.hf_unlearn.lock'
    """
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f".{folder.name}.hf_unlearn.lock"
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no inter-process lock available
        yield lock
        return
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError as err:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"model folder {str(folder)!r} is locked by another apply ({lock})") from err
                time.sleep(0.05)
        yield lock
    finally:
        os.close(fd)  # closing releases the lock


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    from hf_unlearn.utils.serialization import jsonable as _jsonable

    return json.dumps(_jsonable(value), sort_keys=True)


def evidence_numbers(evidence: dict[str, Any]) -> dict[str, Any]:
    """The numbers of an evidence dict, flat (``a.b.c`` keys), with every text, list and per-item record dropped.

    An ``{"evaluation": report, "gold": report}`` dict keeps its two parts (each reduced to numbers); any other
    dict is reduced as a whole. Keys that look like free text (spaces, longer than 64 characters) are dropped.

    Example:
        >>> evidence_numbers({"forget_quality": 0.5, "samples": ["Paris is..."], "mia": {"loss": {"auc": 0.6}}})
        {'forget_quality': 0.5, 'mia.loss.auc': 0.6}
    """
    from hf_unlearn.model_card import summarize_evaluation

    def clean(d: Any) -> dict[str, Any]:
        if not isinstance(d, dict):
            return {}
        return {k: v for k, v in summarize_evaluation(d).items() if len(k) <= 64 and " " not in k}

    if set(evidence) and set(evidence) <= {"evaluation", "gold"}:
        return {k: clean(v) for k, v in evidence.items()}
    return clean(evidence)


def _scrub(text: str | None, uids: list[str]) -> str | None:
    """An error message or note reduced to its error type: messages may quote uids or example text."""
    if not text:
        return text
    head = text.split(":", 1)[0].strip()
    if head.isidentifier() and head not in uids:
        return f"{head}: <message removed by purge-uids>"
    return "<message removed by purge-uids>"


class Ledger:
    """SQLite ledger of deletion requests. One object per process (open another in each worker).

    Args:
        path: the database file (created with its parent folders if missing).
        timeout: seconds a writer waits for another writer's lock before failing.

    Example:
        >>> import tempfile, os
        >>> led = Ledger(os.path.join(tempfile.mkdtemp(), "l.db"))
        >>> rid = led.submit(["u1"], method="ssd")
        >>> led.uids(rid)
        ['u1']
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0, read_only: bool | None = None):
        self.path = Path(path)
        if self.path.is_dir():
            raise LedgerError(f"ledger path {str(self.path)!r} is a folder, not a SQLite ledger file")
        if read_only is None:  # open read-only when the file (or, for a new one, its folder) cannot be written
            probe = self.path if self.path.exists() else self.path.parent
            read_only = probe.exists() and not os.access(probe, os.W_OK)
            if self.path.exists() and not os.access(self.path.parent, os.W_OK):
                read_only = True  # SQLite needs to create its journal files beside the database
        self.read_only = bool(read_only)
        if self.read_only:
            if not self.path.is_file():
                raise LedgerError(f"no ledger at {str(self.path)!r} to open read-only")
            self._conn = self._connect_read_only(timeout)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode (isolation_level=None): transactions are explicit BEGIN IMMEDIATE ... COMMIT
            self._conn = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self.read_only:
                self._check_is_ledger()
                return
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed: purged text does not linger
            with self._transaction() as cur:
                for statement in _SCHEMA.split(";"):  # not executescript(): it would COMMIT the open transaction
                    if statement.strip():
                        cur.execute(statement)
                cols = {r[1] for r in cur.execute("PRAGMA table_info(requests)")}
                if "version" not in cols:  # ledgers made before per-request versions
                    cur.execute("ALTER TABLE requests ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise self._explain(err) from err

    def _connect_read_only(self, timeout: float) -> sqlite3.Connection:
        uri = self.path.absolute().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:  # WAL database in a read-only folder: cannot create -shm; read as immutable
            conn.close()
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=timeout, check_same_thread=False)
        except sqlite3.DatabaseError as err:
            conn.close()
            raise self._explain(err) from err

    def _check_is_ledger(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"requests", "request_uid_hashes", "events"} <= tables:
            raise LedgerError(
                f"{str(self.path)!r} is a SQLite database but not a hf_unlearn ledger (tables: {sorted(tables)})"
            )

    def _explain(self, err: BaseException) -> LedgerError:
        text = str(err)
        if "not a database" in text or "malformed" in text or "file is encrypted" in text:
            return LedgerError(
                f"{str(self.path)!r} is not a usable SQLite ledger ({text}): it is corrupt, truncated or another kind "
                "of file. Restore it from a backup, or pass another --ledger path."
            )
        if "readonly" in text or "read-only" in text:
            return LedgerError(
                f"ledger {str(self.path)!r} is read-only ({text}): listing, show and certificates work, but "
                "submit/apply/verify need write access to the file and its folder."
            )
        return LedgerError(f"cannot use ledger {str(self.path)!r}: {text}")

    @staticmethod
    def _retry(fn: Callable[[], Any], attempts: int = 50) -> Any:
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as err:  # "database is locked" while another process switches to WAL
                if "locked" not in str(err) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        return None  # pragma: no cover

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        if self.read_only:
            raise LedgerError(
                f"ledger {str(self.path)!r} is open read-only (the file or its folder is not writable): this "
                "change needs write access"
            )
        cur = self._conn.cursor()
        try:
            self._retry(lambda: cur.execute("BEGIN IMMEDIATE"))
        except sqlite3.DatabaseError as err:
            cur.close()
            raise self._explain(err) from err
        try:
            yield cur
        except sqlite3.DatabaseError as err:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            raise self._explain(err) from err
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            try:
                cur.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                raise self._explain(err) from err
        finally:
            cur.close()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # ----------------------------------------------------------------------------------------------- writing
    def submit(
        self,
        uids: Iterable[str],
        method: str,
        requester: str | None = None,
        reason: str | None = None,
        target: str | None = None,
        check_method: bool = True,
    ) -> str:
        """Record a new deletion request (status ``received``) and return its id.

        Args:
            uids: the uids of the training examples to forget (ids, never text).
            method: the unlearning method that will apply it (a registry name).
            requester: who asked (free text, e.g. an email or ticket id).
            reason: why (free text, e.g. a legal basis).
            target: the model folder the request applies to (for :meth:`recover`).
            check_method: refuse a method that is not registered (the error lists the valid ones).

        Raises:
            ValueError: empty uid list, empty or unknown method name.
        """
        if isinstance(uids, str):
            raise ValueError(f"uids must be a list of uid strings, got the single string {uids!r}")
        uid_list = sorted({str(u) for u in uids})
        if not uid_list:
            raise ValueError("a deletion request needs at least one uid")
        if not method or not isinstance(method, str):
            raise ValueError(f"method must be a non-empty method name, got {method!r}")
        if check_method:
            _check_method(method)
        rid = "req-" + uuid.uuid4().hex[:20]
        now = _now()
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO requests (request_id, method, requester, reason, status, n_uids, uids_digest, target, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 'received', ?, ?, ?, ?, ?)",
                (rid, method, requester, reason, len(uid_list), uids_digest(uid_list), target, now, now),
            )
            cur.executemany(
                "INSERT INTO request_uid_hashes (request_id, uid_hash) VALUES (?, ?)",
                [(rid, uid_hash(u)) for u in uid_list],
            )
            cur.executemany("INSERT INTO request_uids (request_id, uid) VALUES (?, ?)", [(rid, u) for u in uid_list])
            self._event(cur, rid, "received")
        return rid

    @staticmethod
    def _event(cur: sqlite3.Cursor, rid: str, status: str, note: str | None = None) -> None:
        cur.execute(
            "INSERT INTO events (request_id, at, status, note) VALUES (?, ?, ?, ?)", (rid, _now(), status, note)
        )

    def _status_in(
        self,
        cur: sqlite3.Cursor,
        rid: str,
        allowed: tuple[str, ...],
        action: str,
        expect_version: int | None = None,
    ) -> str:
        row = cur.execute("SELECT status, version FROM requests WHERE request_id = ?", (rid,)).fetchone()
        if row is None:
            raise KeyError(self._missing(rid))
        if expect_version is not None and row["version"] != expect_version:
            raise ApplyConflictError(
                f"cannot {action} request {rid!r}: another process changed it meanwhile (its status is now "
                f"{row['status']!r}); nothing was saved by this process. See `hf-unlearn ledger show {rid}`."
            )
        if row["status"] not in allowed:
            raise ValueError(f"cannot {action} request {rid!r}: its status is {row['status']!r}, expected {allowed}")
        return row["status"]

    def _missing(self, rid: Any) -> str:
        return f"no deletion request {rid!r} in ledger {str(self.path)!r} (see Ledger.list())"

    def mark_applying(
        self,
        request_id: str,
        changes: dict[str, Any],
        hash_before: str | None,
        hash_after: str | None,
        expect_version: int | None = None,
    ) -> int:
        """Record, BEFORE the model is saved, what changed and the hash the saved weights will have.

        Args:
            expect_version: the request's ``version`` when the caller read it; when another process changed the
                request since, :class:`ApplyConflictError` is raised and nothing is written (compare-and-swap).

        Returns:
            The request's new version.
        """
        with self._transaction() as cur:
            self._status_in(cur, request_id, PENDING, "start applying", expect_version)
            cur.execute(
                "UPDATE requests SET status='applying', changes=?, hash_before=?, hash_after=?, updated_at=?, "
                "version=version+1 WHERE request_id=?",
                (_dumps(changes), hash_before, hash_after, _now(), request_id),
            )
            self._event(cur, request_id, "applying")
            return int(cur.execute("SELECT version FROM requests WHERE request_id=?", (request_id,)).fetchone()[0])

    def mark_applied(
        self,
        request_id: str,
        changes: dict[str, Any] | None,
        hash_before: str | None,
        hash_after: str | None,
        expect_version: int | None = None,
    ) -> None:
        """The request's change is in the saved model. ``changes``: what changed (JSON-able dict).

        Raises:
            KeyError: unknown id. ValueError: the request is not pending. ApplyConflictError: ``expect_version``
            given and another process changed the request meanwhile.
        """
        with self._transaction() as cur:
            self._status_in(cur, request_id, PENDING, "mark applied", expect_version)
            now = _now()
            cur.execute(
                "UPDATE requests SET status='applied', changes=COALESCE(?, changes), "
                "hash_before=COALESCE(?, hash_before), hash_after=COALESCE(?, hash_after), error=NULL, "
                "applied_at=?, updated_at=?, version=version+1 WHERE request_id=?",
                (_dumps(changes), hash_before, hash_after, now, now, request_id),
            )
            self._event(cur, request_id, "applied")

    def mark_verified(self, request_id: str, evidence: dict[str, Any]) -> None:
        """Attach verification evidence (e.g. MIA AUC, forget quality vs the gold model) to an applied request.

        Only numbers are stored (:func:`evidence_numbers`): generated answers, per-item records and any other text
        of an evaluation report are dropped, so the ledger never holds quotes of the forgotten examples.
        """
        if not isinstance(evidence, dict):
            raise ValueError(f"evidence must be a dict of metrics (e.g. an evaluation report), got {type(evidence)}")
        with self._transaction() as cur:
            self._status_in(cur, request_id, ("applied", "verified"), "mark verified")
            now = _now()
            cur.execute(
                "UPDATE requests SET status='verified', evidence=?, verified_at=?, updated_at=?, "
                "version=version+1 WHERE request_id=?",
                (_dumps(evidence_numbers(evidence)), now, now, request_id),
            )
            self._event(cur, request_id, "verified")

    def mark_failed(self, request_id: str, error: str | BaseException, expect_version: int | None = None) -> bool:
        """Mark a request failed with its error (a verified request cannot fail any more).

        Args:
            expect_version: mark it failed only when its version is still this one (else leave it and return
                ``False``): an apply that lost a race must not fail a request another process applied.

        Returns:
            Whether the request was marked failed.
        """
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        allowed = ("received", "applying", "applied", "failed")
        with self._transaction() as cur:
            if expect_version is not None:
                row = cur.execute("SELECT version FROM requests WHERE request_id=?", (request_id,)).fetchone()
                if row is None or row["version"] != expect_version:
                    return False
            self._status_in(cur, request_id, allowed, "mark failed")
            cur.execute(
                "UPDATE requests SET status='failed', error=?, updated_at=?, version=version+1 WHERE request_id=?",
                (text, _now(), request_id),
            )
            self._event(cur, request_id, "failed", text[:2000])
        return True

    def set_target(self, request_id: str, target: str | os.PathLike) -> None:
        """Record the model folder a pending request applies to (checked by :meth:`recover`)."""
        with self._transaction() as cur:
            self._status_in(cur, request_id, PENDING, "set the target of")
            cur.execute(
                "UPDATE requests SET target=?, updated_at=? WHERE request_id=?", (str(target), _now(), request_id)
            )

    def purge_uids(self, request_id: str | None = None) -> int:
        """Delete the stored uids (of one request, or of every request that is no longer pending), and scrub every
        text that could quote them or the forgotten examples.

        The uid hashes stay, so certificates can still be issued. For the purged requests, the evidence is reduced
        to numbers, free text in ``changes`` is replaced by ``"<text omitted>"``, and error messages and event notes
        are reduced to the error type. SQLite's ``secure_delete`` zeroes the freed bytes and the WAL journal
        is checkpointed and truncated, so the old text is not left in the file either.

        Returns:
            The number of uid rows removed.
        """
        from hf_unlearn.utils.serialization import numbers_only as _numbers_only

        with self._transaction() as cur:
            if request_id is not None:
                self._status_in(cur, request_id, STATUSES, "purge uids of")
                rids = [request_id]
            else:
                rids = [
                    r[0]
                    for r in cur.execute(
                        "SELECT request_id FROM requests WHERE status NOT IN ('received', 'applying')"
                    )
                ]
            n = 0
            for rid in rids:
                uids = [r[0] for r in cur.execute("SELECT uid FROM request_uids WHERE request_id=?", (rid,))]
                row = cur.execute(
                    "SELECT changes, evidence, error FROM requests WHERE request_id=?", (rid,)
                ).fetchone()
                changes = _dumps(_numbers_only(json.loads(row["changes"]))) if row["changes"] else None
                evidence = _dumps(evidence_numbers(json.loads(row["evidence"]))) if row["evidence"] else None
                cur.execute(
                    "UPDATE requests SET changes=?, evidence=?, error=? WHERE request_id=?",
                    (changes, evidence, _scrub(row["error"], uids), rid),
                )
                for seq, note in cur.execute(
                    "SELECT seq, note FROM events WHERE request_id=? AND note IS NOT NULL AND status='failed'", (rid,)
                ).fetchall():
                    cur.execute("UPDATE events SET note=? WHERE seq=?", (_scrub(note, uids), seq))
                for seq, details in cur.execute(
                    "SELECT seq, details FROM followups WHERE request_id=? AND details IS NOT NULL", (rid,)
                ).fetchall():
                    cur.execute(
                        "UPDATE followups SET details=? WHERE seq=?", (_dumps(_numbers_only(json.loads(details))), seq)
                    )
                n += cur.execute("DELETE FROM request_uids WHERE request_id=?", (rid,)).rowcount
            self._event(cur, request_id or "*", "uids_purged", f"{n} uid rows")
        with contextlib.suppress(sqlite3.Error):  # move the WAL into the (zeroed) database file and truncate it
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n

    # ----------------------------------------------------------------------------------------------- follow-ups
    def start_followup(self, request_id: str, kind: str, hash_before: str | None = None) -> int:
        """Record the start of a follow-up operation on an applied request (e.g. S3T ``retrain``); returns its id."""
        with self._transaction() as cur:
            self._status_in(cur, request_id, ("applied", "verified"), f"start a {kind!r} follow-up of")
            cur.execute(
                "INSERT INTO followups (request_id, kind, status, hash_before, started_at) VALUES (?, ?, ?, ?, ?)",
                (request_id, kind, "running", hash_before, _now()),
            )
            seq = int(cur.lastrowid)
            self._event(cur, request_id, f"{kind}_started")
        return seq

    def finish_followup(
        self, seq: int, details: dict[str, Any] | None, hash_after: str | None = None, error: str | None = None
    ) -> None:
        """Record the end of a follow-up (``details``: numbers and names only; ``error`` when it failed)."""
        from hf_unlearn.utils.serialization import numbers_only as _numbers_only

        with self._transaction() as cur:
            row = cur.execute("SELECT request_id, kind FROM followups WHERE seq=?", (seq,)).fetchone()
            if row is None:
                raise KeyError(f"no follow-up {seq} in ledger {str(self.path)!r}")
            status = "failed" if error else "done"
            body = _numbers_only(details or {})
            if error:
                body = {**body, "error": error[:500]}
            cur.execute(
                "UPDATE followups SET status=?, details=?, hash_after=?, finished_at=? WHERE seq=?",
                (status, _dumps(body), hash_after, _now(), seq),
            )
            self._event(cur, row["request_id"], f"{row['kind']}_{status}")

    def followups(self, request_id: str) -> list[dict[str, Any]]:
        """The follow-up operations recorded for a request (oldest first)."""
        try:
            rows = self._conn.execute("SELECT * FROM followups WHERE request_id=? ORDER BY seq", (request_id,))
            rows = rows.fetchall()
        except sqlite3.OperationalError:  # an old ledger opened read-only: no follow-up table yet
            return []
        out = []
        for r in rows:
            d = dict(r)
            d["details"] = json.loads(d["details"]) if d["details"] else None
            out.append(d)
        return out

    # ----------------------------------------------------------------------------------------------- reading
    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise self._explain(err) from err

    def _row(self, row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for k in ("changes", "evidence"):
            out[k] = json.loads(out[k]) if out[k] else None
        return out

    def get(self, request_id: str) -> dict[str, Any]:
        """The request as a dict (status, method, hashes, changes, evidence, timestamps, ``uid_hashes``).

        Raises:
            KeyError: naming the unknown id.
        """
        rows = self._read("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        if not rows:
            raise KeyError(self._missing(request_id))
        out = self._row(rows[0])
        out["uid_hashes"] = [
            r[0]
            for r in self._read(
                "SELECT uid_hash FROM request_uid_hashes WHERE request_id=? ORDER BY uid_hash", (request_id,)
            )
        ]
        return out

    def uids(self, request_id: str) -> list[str]:
        """The uids of a request (sorted).

        Raises:
            KeyError: unknown id. LookupError: the uids were purged.
        """
        rec = self.get(request_id)
        uids = [
            r[0] for r in self._read("SELECT uid FROM request_uids WHERE request_id=? ORDER BY uid", (request_id,))
        ]
        if len(uids) != rec["n_uids"]:
            raise LookupError(f"the uids of request {request_id!r} were purged; only their hashes remain")
        return uids

    def events(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """The audit trail (every status change with its time), oldest first."""
        q, args = "SELECT * FROM events", ()
        if request_id is not None:
            q, args = q + " WHERE request_id=?", (request_id,)
        return [dict(r) for r in self._read(q + " ORDER BY seq", args)]

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every request (oldest first), or those with ``status``.

        Raises:
            ValueError: an unknown status (lists the valid ones).
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; valid statuses: {list(STATUSES)}")
        q, args = "SELECT * FROM requests", ()
        if status is not None:
            q, args = q + " WHERE status=?", (status,)
        return [self._row(r) for r in self._read(q + " ORDER BY created_at, request_id", args)]

    def pending(self) -> list[dict[str, Any]]:
        """Requests not applied yet (``received``, or ``applying`` when a process died during the save)."""
        return [r for r in self.list() if r["status"] in PENDING]

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM requests")[0][0])

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when the file is sound)."""
        return str(self._read("PRAGMA integrity_check")[0][0])

    # ----------------------------------------------------------------------------------------------- recovery
    def recover(
        self, current_hash: str | Callable[[dict[str, Any]], str | None] | None = None, resolve: bool = False
    ) -> list[dict[str, Any]]:
        """Report each pending request after a restart, and whether its model save landed.

        First, an interrupted folder swap of each pending request's ``target`` is finished or rolled back
        (:func:`~hf_unlearn.utils.atomic.recover_folder`, under the folder's lock).

        Args:
            current_hash: the weights hash of the model as it is on disk now, or a function
                ``request -> hash`` (e.g. ``lambda r: folder_weights_hash(r["target"])``). Default: the request's
                ``target`` folder's :func:`hf_unlearn.hub.saved_model_hash` (the weights hash recorded in its
                ``hf_unlearn.json``, else the hash of its safetensors, or the S3T state hash), when set.
            resolve: mark the requests whose save landed as ``applied`` (their recorded changes and hashes are
                right); the others stay pending, to be applied again.

        Returns:
            One dict per pending request: ``request_id``, ``status``, ``state`` and ``action``. ``state`` is
            ``"not_started"`` (nothing recorded: apply it), ``"saved"`` (disk holds ``hash_after``: mark applied),
            ``"not_saved"`` (disk holds ``hash_before``, or the target folder was never created: apply again), or
            ``"unknown"`` (disk holds neither, or no hash was available: inspect by hand).
        """
        from hf_unlearn.hub import saved_model_hash
        from hf_unlearn.utils.atomic import recover_folder

        report = []
        for req in self.pending():
            target = req.get("target")
            missing_target = False
            if target and Path(target).absolute().parent.is_dir():
                with folder_lock(target):
                    recover_folder(target)
                missing_target = not Path(target).exists()
            error = None
            if callable(current_hash):
                disk = current_hash(req)
            elif current_hash is not None:
                disk = current_hash
            elif target and not missing_target:
                try:
                    disk = saved_model_hash(target)
                except (OSError, ValueError) as err:
                    disk, error = None, f"{type(err).__name__}: {err}"
            else:
                disk = None
            if req["status"] == "received":
                state, action = "not_started", "apply"
            elif disk is not None and disk == req["hash_after"]:
                state, action = "saved", "mark_applied"
            elif disk is not None and disk == req["hash_before"]:
                state, action = "not_saved", "apply"
            elif missing_target and current_hash is None:
                state, action = "not_saved", "apply"  # the swap creates the folder: a save never landed
            else:
                state, action = "unknown", "inspect"
            if resolve and state == "saved":
                self.mark_applied(req["request_id"], None, None, None)
                action = "marked_applied"
            entry = {
                "request_id": req["request_id"],
                "status": req["status"],
                "state": state,
                "action": action,
                "disk_hash": disk,
            }
            if error:
                entry["error"] = error
            report.append(entry)
        return report


def _check_method(method: str) -> None:
    import difflib

    from hf_unlearn.registry import list_methods

    valid = list_methods()
    if method not in valid:
        close = difflib.get_close_matches(str(method), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown unlearning method {method!r}; valid methods: {', '.join(valid)}.{hint}")


def _disk_hash_or_none(fn: Callable[[Any], str], folder: Path) -> str | None:
    return fn(folder) if folder.exists() else None


def apply_request(
    ledger: Ledger,
    request_id: str,
    apply_fn: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]],
    save_fn: Callable[[Any], None] | None = None,
    *,
    hash_before: str | Callable[[], str | None] | None = None,
    model: Any = None,
    hash_fn: Callable[[Any], str] = weights_hash,
    target: str | os.PathLike | None = None,
    write_fn: Callable[[Any, Path], None] | None = None,
    disk_hash_fn: Callable[[Any], str] | None = None,
) -> dict[str, Any]:
    """Apply one pending request with the crash-safe, concurrency-safe protocol; return the updated record.

    Everything below runs holding the model folder's lock (:func:`folder_lock` on ``target``, default: the
    request's ``target``), after finishing any interrupted swap of that folder:

    0. A request left ``applying`` by a crash is resolved first: when the folder holds ``hash_after`` the save had
       landed and the request is just marked applied (nothing is applied twice); when it holds neither recorded
       hash, :class:`ApplyConflictError` says to inspect it (``hf-unlearn ledger recover``).
    1. ``apply_fn(request)`` changes the model in memory and returns ``(new_model, changes)``; ``request``
       is the ledger record plus ``"uids"``.
    2. One transaction records ``changes``, the hash before and the hash of the new weights (status ``applying``),
       as a compare-and-swap on the request's version: if another process changed the request meanwhile,
       nothing is saved and :class:`ApplyConflictError` is raised (the request is NOT marked failed).
    3. The model is written atomically. With ``write_fn(new_model, tmp_folder)`` (recommended) it is written into
       the temporary folder of an atomic swap of ``target``; the hash recorded in 2 is ``disk_hash_fn`` of what
       was written, and the folder's current hash is compared with ``hash_before`` right before the swap
       (compare-and-swap: a folder changed by someone else is never overwritten). With ``save_fn(new_model)``
       (atomic itself, e.g. :func:`hf_unlearn.hub.save_unlearned`) the hash is ``hash_fn(new_model)``, and the
       folder is compared with ``hash_before`` only when ``disk_hash_fn`` is given (the two hashes must agree).
    4. One transaction marks the request ``applied``.
    A crash after 2 and before 4 is resolved by :meth:`Ledger.recover` (or by the next apply, step 0). Any other
    exception in 1-3 marks the request ``failed`` (with the error), unless another process changed it meanwhile,
    and is re-raised.

    Args:
        ledger: the ledger.
        request_id: a pending request.
        apply_fn: ``request -> (model, changes)``.
        save_fn: ``model -> None``, atomic (or pass ``write_fn`` and ``target``).
        hash_before: the hash of the model the change is computed from (a string, or a function called under the
            lock); computed from ``model`` with ``hash_fn`` when not given.
        model: the model before the change (only to compute ``hash_before``; hashed before ``apply_fn`` runs).
        hash_fn: how in-memory weights are hashed (``save_fn`` mode); it must agree with what ``recover``
            compares against (the saved folder's tensors).
        target: the model folder (default: the request's ``target``).
        write_fn: ``(model, folder) -> None``: write the model into ``folder`` (not atomic itself).
        disk_hash_fn: the hash of a saved folder (default :func:`hf_unlearn.hub.saved_model_hash`).

    Raises:
        ValueError: the request is not pending (its status is named). ApplyConflictError: lost a race (see above).

    Example:
        >>> import tempfile, os, torch
        >>> from hf_unlearn.utils.atomic import atomic_save
        >>> from safetensors.torch import save_file
        >>> root = tempfile.mkdtemp()
        >>> led = Ledger(os.path.join(root, "l.db"))
        >>> sd = {"w": torch.ones(3)}
        >>> rid = led.submit(["u1"], method="ssd", target=os.path.join(root, "model"))
        >>> def forget(req):
        ...     return {"w": sd["w"] * 0}, {"zeroed": ["w"]}
        >>> def write(new, folder):
        ...     save_file(new, str(folder / "model.safetensors"))
        >>> apply_request(led, rid, forget, write_fn=write, model=sd)["status"]
        'applied'
    """
    from hf_unlearn.hub import saved_model_hash
    from hf_unlearn.utils.atomic import atomic_folder, recover_folder

    if (save_fn is None) == (write_fn is None):
        raise ValueError("pass exactly one of save_fn (atomic itself) or write_fn (written into an atomic swap)")
    req = ledger.get(request_id)
    folder = Path(target) if target is not None else (Path(req["target"]) if req.get("target") else None)
    if write_fn is not None and folder is None:
        raise ValueError("write_fn needs the model folder: pass target= (or submit the request with target=)")
    disk_hash = disk_hash_fn or saved_model_hash
    lock = folder_lock(folder) if folder is not None else contextlib.nullcontext()
    with lock:
        if folder is not None:
            recover_folder(folder)  # a crash between the two renames of a swap: put the old folder back first
        req = ledger.get(request_id)
        if req["status"] == "applying" and folder is not None:
            disk = _disk_hash_or_none(disk_hash, folder)
            if disk is not None and disk == req["hash_after"]:  # the save had landed before a crash
                ledger.mark_applied(request_id, None, None, None, expect_version=req["version"])
                return ledger.get(request_id)
            if disk is not None and disk != req["hash_before"]:
                raise ApplyConflictError(
                    f"request {request_id!r} was interrupted while applying, and {str(folder)!r} holds neither the "
                    "model before nor the one after it: inspect it (`hf-unlearn ledger recover`) before applying"
                )
        if req["status"] not in PENDING:
            raise ValueError(
                f"request {request_id!r} is {req['status']!r}; only pending requests {PENDING} can be applied"
                + (" (it is already applied: nothing to do)" if req["status"] in ("applied", "verified") else "")
            )
        version = req["version"]
        # loading/hashing the current model: an error here (missing or corrupt folder, wrong base) leaves the
        # request pending, to be applied once the folder is fixed
        hb = hash_before() if callable(hash_before) else hash_before
        if hb is None and model is not None:
            hb = hash_fn(model)
        try:
            req = {**req, "uids": ledger.uids(request_id)}
            new_model, changes = apply_fn(req)
            if write_fn is not None:
                with atomic_folder(folder) as tmp:
                    write_fn(new_model, tmp)
                    hash_after = disk_hash(tmp)
                    disk = _disk_hash_or_none(disk_hash, folder)
                    if disk is not None and hb is not None and disk != hb:
                        raise ApplyConflictError(
                            f"model folder {str(folder)!r} holds a model (hash {disk[:16]}...) other than the one "
                            f"request {request_id!r} was computed from (hash {hb[:16]}...): saving would discard "
                            "it. Apply the request to the model in that folder (e.g. --model pointing at it)."
                        )
                    version = ledger.mark_applying(request_id, changes, hb, hash_after, expect_version=version)
            else:
                hash_after = hash_fn(new_model)
                if disk_hash_fn is not None and folder is not None and hb is not None:  # compare-and-swap
                    disk = _disk_hash_or_none(disk_hash_fn, folder)
                    if disk is not None and disk != hb:
                        raise ApplyConflictError(
                            f"model folder {str(folder)!r} holds a model (hash {disk[:16]}...) other than the one "
                            f"request {request_id!r} was computed from (hash {hb[:16]}...): reload it and apply again"
                        )
                version = ledger.mark_applying(request_id, changes, hb, hash_after, expect_version=version)
                save_fn(new_model)
        except ApplyConflictError:
            raise
        except BaseException as err:
            if not isinstance(err, (KeyboardInterrupt, SystemExit)):
                ledger.mark_failed(request_id, err, expect_version=version)
            raise
        ledger.mark_applied(request_id, None, None, None, expect_version=version)
    return ledger.get(request_id)


def _looks_local(model: Any) -> bool:
    if not isinstance(model, (str, os.PathLike)):
        return False
    p = Path(model)
    if p.exists() or p.is_absolute() or str(model).startswith((".", "~")):
        return True
    return p.parent.is_dir() and (len(p.parts) > 1 or any(p.parent.glob(f".tmp-{p.name}.old-*")))


def apply_unlearning(
    ledger: Ledger,
    request_id: str,
    model: Any,
    *,
    train_dataset: Any = None,
    output_dir: str | os.PathLike | None = None,
    tokenizer: Any = None,
    config: Any = None,
    save_kwargs: dict[str, Any] | None = None,
    base_model: Any = None,
    **unlearn_kwargs: Any,
) -> dict[str, Any]:
    """Apply a pending request with :func:`hf_unlearn.unlearn` and save the model atomically (crash-safe).

    The method is the one recorded with the request; the forget set is the request's uids looked up in
    ``train_dataset``. An S3T folder (``S3TModel.save_pretrained`` output) is handled by :func:`apply_s3t`
    (pass ``base_model``). Applies to one folder are serialised (:func:`folder_lock`); a folder left mid-swap by a
    crash is restored first; the saved folder's hash is what the ledger records.

    Args:
        ledger: the ledger.
        request_id: a pending request.
        model: the model (object, or a folder / Hub id loaded with :func:`hf_unlearn.models.load_model`; a folder
            is loaded while holding its lock).
        train_dataset: the training data the uids refer to (retain = the rest).
        output_dir: where to save (default: the request's ``target``, else ``model`` when it is a folder). The
            folder is replaced atomically.
        tokenizer: the tokenizer (loaded with the model when ``model`` is a name).
        config: the method's config (object or dict); more config fields or method kwargs via ``**unlearn_kwargs``.
        save_kwargs: extra :func:`hf_unlearn.hub.save_unlearned` arguments.
        base_model: for an S3T folder, the base model it was trained on (object or folder).

    Returns:
        The updated ledger record (``applied``), with ``changes`` = the method's report (numbers and names only).

    Raises:
        FileNotFoundError: naming a model folder that does not exist. ApplyConflictError: the output folder holds
        a model other than the one loaded (applying would discard it).
    """
    from hf_unlearn.api import unlearn
    from hf_unlearn.hub import is_s3t_folder, model_weights_hash, saved_model_hash, write_unlearned
    from hf_unlearn.models import load_model
    from hf_unlearn.utils.atomic import recover_folder
    from hf_unlearn.utils.serialization import jsonable as _jsonable
    from hf_unlearn.utils.serialization import numbers_only as _numbers_only

    req = ledger.get(request_id)
    if _looks_local(model):
        with folder_lock(model):  # never while another process is between the two renames of its swap
            recover_folder(model)  # a crash between the two renames leaves the folder beside its name
        if is_s3t_folder(model):
            return apply_s3t(ledger, request_id, model, base_model, tokenizer=tokenizer)
        if not Path(model).exists():
            raise FileNotFoundError(
                f"model folder {str(model)!r} does not exist (and no interrupted save of it was found to recover)"
            )
    target = output_dir or req.get("target")
    if target is None and isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
        target = model
    if target is None:
        raise ValueError("where should the unlearned model go? pass output_dir= (or submit the request with target=)")
    local = _looks_local(model)
    holder: dict[str, Any] = {"model": model, "tokenizer": tokenizer}

    def hash_before() -> str:  # called under the folder lock: a folder is loaded only once the lock is held
        if isinstance(model, (str, os.PathLike)):
            holder["model"], loaded_tok = load_model(model)
            holder["tokenizer"] = tokenizer or loaded_tok
            if local:
                return saved_model_hash(model)
        return model_weights_hash(holder["model"])

    def apply_fn(r: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        res = unlearn(
            holder["model"],
            r["uids"],
            method=r["method"],
            config=config,
            tokenizer=holder["tokenizer"],
            train_dataset=train_dataset,
            **unlearn_kwargs,
        )
        holder["result"] = res
        changes = {"details": _numbers_only(_jsonable(res.details)), "timings": _jsonable(res.timings)}
        return res.model, changes

    def write_fn(_model: Any, folder: Path) -> None:
        write_unlearned(holder["result"], folder, **(save_kwargs or {}))

    if req.get("target") != str(target):  # recover() checks this folder after a crash
        ledger.set_target(request_id, str(target))
    return apply_request(ledger, request_id, apply_fn, target=target, write_fn=write_fn, hash_before=hash_before)


# ------------------------------------------------------------------------------------------------ S3T
def _load_base(base_model: Any, folder: Path) -> Any:
    if base_model is None:
        raise ValueError(
            f"{str(folder)!r} is an S3T folder (LoRA adapters only): pass the base model it was trained on "
            "(base_model= / --base-model FOLDER)"
        )
    if isinstance(base_model, (str, os.PathLike)):
        from hf_unlearn.models import load_model

        if _looks_local(base_model) and not Path(base_model).exists():
            raise FileNotFoundError(f"base model folder {str(base_model)!r} does not exist")
        return load_model(base_model)[0]
    return base_model


def load_s3t_folder(folder: str | os.PathLike, base_model: Any, tokenizer: Any = None) -> Any:
    """``S3TModel.from_pretrained`` with clear errors: a corrupt/truncated inventory or adapter names its path, and a
    base other than the recorded one (:func:`hf_unlearn.hub.check_s3t_base`) is refused.

    Args:
        folder: an ``S3TModel.save_pretrained`` folder.
        base_model: the base model (object or folder).
        tokenizer: default: the one saved in the folder.
    """
    from hf_unlearn.hub import check_s3t_base, read_s3t_inventory
    from hf_unlearn.methods.s3t import S3TModel

    folder = Path(folder)
    read_s3t_inventory(folder)
    base = _load_base(base_model, folder)
    check_s3t_base(folder, base)
    try:
        return S3TModel.from_pretrained(folder, base, tokenizer=tokenizer)
    except (OSError, RuntimeError, KeyError) as err:
        raise ValueError(f"cannot load the S3T folder {str(folder)!r}: {type(err).__name__}: {err}") from err


def _copy_s3t_folder(src: Path, dst: Path, keep_adapters: Iterable[str]) -> None:
    """Copy an S3T folder's files into ``dst`` (an atomic swap's temporary folder), only the kept adapters."""
    from hf_unlearn.hub import S3T_ADAPTERS

    keep = set(keep_adapters)
    for p in src.iterdir():
        if p.name == S3T_ADAPTERS:
            (dst / S3T_ADAPTERS).mkdir(exist_ok=True)
            for a in p.iterdir():
                if a.is_dir() and a.name in keep:
                    shutil.copytree(a, dst / S3T_ADAPTERS / a.name)
        elif p.is_dir():
            shutil.copytree(p, dst / p.name)
        else:
            shutil.copy2(p, dst / p.name)


def _s3t_changes(report: dict[str, Any], s3t: Any) -> dict[str, Any]:
    served = s3t.served()
    return {
        "operation": "s3t_delete",
        "n_deleted": len(report["deleted"]),
        "n_already_deleted": len(report["already_deleted"]),
        "shards_hit": list(report["shards_hit"]),
        "adapters_removed": sorted(report["adapters_removed"]),
        "cuts": [{k: c[k] for k in ("shard", "sequence", "from", "to", "stages_cut")} for c in report["cuts"]],
        "served": {str(j): list(chain) for j, chain in sorted(served.items())},
        "served_prefix_lengths": {str(j): n for j, n in sorted(s3t.served_prefix_lengths().items())},
        "live_shards": list(report["live_shards"]),
        "dead_shards": list(report["dead_shards"]),
        "delete_seconds": float(report["seconds"]),
    }


def apply_s3t(
    ledger: Ledger,
    request_id: str,
    folder: str | os.PathLike,
    base_model: Any,
    *,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Apply an ``s3t`` request to an S3T folder: ``S3TModel.delete`` (bookkeeping, milliseconds), saved atomically.

    The ledger records which adapters were dropped (their data held a forgotten uid), the cut of each sequence,
    which adapter chain (prefix) each shard now serves, the dead shards, and the state hash of the folder before
    and after (:func:`hf_unlearn.hub.s3t_folder_hash`: the live adapters' file hashes and the deleted uids' hashes).
    When the folder records no base fingerprint yet, the one of ``base_model`` is written beside the inventory
    (``hf_unlearn_s3t_base.json``), so later loads onto another base are refused. Rebuild the cut stages later with
    :func:`retrain_s3t` (a recorded follow-up).

    Args:
        ledger: the ledger.
        request_id: a pending request submitted with ``method="s3t"``.
        folder: the S3T folder (``S3TModel.save_pretrained`` output); it becomes the request's target.
        base_model: the base model it was trained on (object or folder).
        tokenizer: default: the one saved in the folder.

    Returns:
        The updated ledger record (``applied``).

    Example:
        >>> # rec = apply_s3t(led, rid, "s3t_model/", "base_model/")
        >>> # rec["changes"]["adapters_removed"], rec["changes"]["served_prefix_lengths"]
    """
    from hf_unlearn.hub import S3T_BASE_FILE, recorded_s3t_base, s3t_base_fingerprint, s3t_folder_hash

    folder = Path(folder)
    req = ledger.get(request_id)
    if req["method"] != "s3t":
        raise ValueError(
            f"request {request_id!r} was submitted for method {req['method']!r}, but {str(folder)!r} is an S3T "
            "folder: only 's3t' requests apply to it (submit the request with --method s3t)"
        )
    if req.get("target") != str(folder) and req["status"] in PENDING:
        ledger.set_target(request_id, str(folder))
    holder: dict[str, Any] = {}

    def hash_before() -> str:  # under the folder lock: check and load the folder (errors leave the request pending)
        if not folder.is_dir():
            raise FileNotFoundError(f"S3T folder {str(folder)!r} does not exist")
        h = s3t_folder_hash(folder)
        holder["recorded"] = recorded_s3t_base(folder)
        holder["s3t"] = load_s3t_folder(folder, base_model, tokenizer=tokenizer)
        return h

    def apply_fn(r: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        s3t, recorded = holder["s3t"], holder["recorded"]
        report = s3t.delete(r["uids"], persist=False)
        if hasattr(s3t, "flush_deletions"):  # the dropped adapters are freed in the background: wait, then save
            s3t.flush_deletions()
        changes = _s3t_changes(report, s3t)
        fp = recorded or s3t_base_fingerprint(s3t)
        changes["base_fingerprint"] = fp
        changes["base_fingerprint_source"] = "recorded" if recorded else "recorded now (first use)"
        holder["fp"] = fp
        return s3t, changes

    def write_fn(s3t: Any, tmp: Path) -> None:
        _copy_s3t_folder(folder, tmp, s3t.state["adapters"])
        s3t.save_pretrained(tmp)  # keeps the copied adapters, drops the others, writes the new inventory
        s3t.path = folder
        if holder["recorded"] is None:
            (tmp / S3T_BASE_FILE).write_text(
                json.dumps({"base_fingerprint": holder["fp"], "algorithm": "hf_unlearn.hub.s3t_base_fingerprint"})
                + "\n"
            )

    return apply_request(
        ledger, request_id, apply_fn, target=folder, write_fn=write_fn, hash_before=hash_before,
        disk_hash_fn=lambda f: s3t_folder_hash(f),
    )  # fmt: skip


def retrain_s3t(
    ledger: Ledger,
    request_id: str,
    folder: str | os.PathLike,
    base_model: Any,
    train_dataset: Any,
    *,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Rebuild the S3T stages cut by deletions (``S3TModel.retrain``) as a recorded follow-up of an applied request.

    The retrained folder replaces the old one atomically (under the folder lock); the follow-up row records the
    new adapters, the prefix each shard serves afterwards, the seconds it took and the state hashes before and
    after. The retrain trains on each cut slice minus every deleted uid, so the result is what training from
    scratch without them gives (exact).

    Args:
        ledger: the ledger.
        request_id: an applied (or verified) ``s3t`` request.
        folder: its S3T folder.
        base_model: the base model (object or folder).
        train_dataset: the training examples (anything :func:`hf_unlearn.data.load_examples` reads); it must hold
            every surviving uid.
        tokenizer: default: the one saved in the folder.

    Returns:
        The follow-up record (``kind="retrain"``, ``status``, ``details``, ``hash_before``, ``hash_after``).
    """
    from hf_unlearn.hub import s3t_folder_hash
    from hf_unlearn.utils.atomic import atomic_folder, recover_folder

    folder = Path(folder)
    req = ledger.get(request_id)
    if req["method"] != "s3t":
        raise ValueError(f"request {request_id!r} used method {req['method']!r}: retrain follows 's3t' requests only")
    if req["status"] not in ("applied", "verified"):
        raise ValueError(
            f"cannot retrain after request {request_id!r}: its status is {req['status']!r}; apply it first"
        )
    with folder_lock(folder):
        recover_folder(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"S3T folder {str(folder)!r} does not exist")
        hb = s3t_folder_hash(folder)
        seq = ledger.start_followup(request_id, "retrain", hb)
        try:
            s3t = load_s3t_folder(folder, base_model, tokenizer=tokenizer)
            s3t.path = None  # saved below, atomically, instead of in place by retrain()
            t0 = time.perf_counter()
            new = s3t.retrain(dataset=train_dataset)
            seconds = time.perf_counter() - t0
            with atomic_folder(folder) as tmp:
                _copy_s3t_folder(folder, tmp, set(s3t.state["adapters"]) - set(new))
                s3t.save_pretrained(tmp)
                ha = s3t_folder_hash(tmp)
            s3t.path = folder
        except BaseException as err:
            ledger.finish_followup(seq, None, error=f"{type(err).__name__}: {err}")
            raise
        details = {
            "retrained_adapters": sorted(new),
            "served": {str(j): list(c) for j, c in sorted(s3t.served().items())},
            "served_prefix_lengths": {str(j): n for j, n in sorted(s3t.served_prefix_lengths().items())},
            "retrain_seconds": seconds,
        }
        ledger.finish_followup(seq, details, ha)
    return ledger.followups(request_id)[-1]
