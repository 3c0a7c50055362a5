"""The run directory: the one contract between the worker (writer) and the console (reader).

Layout (see docs/architecture.md)::

    $LOWRANK_HOME/runs/<run_id>/
        config.yaml     the fully resolved experiment
        status.json     state, pids, epoch, heartbeat ... written atomically under a lock
        metrics.jsonl   one JSON object per event, appended and flushed
        output.log      the worker's stdout + stderr
        checkpoint.pt   last state; best.pt the best on validation
    $LOWRANK_HOME/results.csv   one row per finished run, appended under a file lock

A run killed at any instant leaves a readable directory: status.json is replaced by
rename (never half-written) and metrics lines are written with a single ``write`` so a
reader sees whole lines; :func:`read_metrics` also skips a trailing partial line.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import fcntl
import io
import json
import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Iterator

import yaml

from .provenance import launch_provenance
from .run_files import MAX_LINE_BYTES, UNREADABLE, load_status, parse_lines

# pruned: a tuning trial its study's pruner stopped at an epoch boundary (lowrank/trial.py)
STATES = ("queued", "running", "finished", "failed", "killed", "pruned")
FINAL_STATES = ("finished", "failed", "killed", "pruned")

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "output.log"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
RESULTS_FILE = "results.csv"

# Columns of results.csv, fixed so that a notebook's read_csv never sees ragged rows.
RESULT_COLUMNS = (
    "run_id", "name", "sweep", "state", "model", "dataset", "method", "hp", "budget",
    "params", "macs", "dense_params", "dense_macs", "epochs", "seed",
    "final_val_err1", "best_val_err1", "test_err1", "test_err5", "test_loss",
    "train_seconds", "ended", "run_dir",
    # Bayesian compression (bayes: runs; empty for others). Appended last: an older results.csv is
    # migrated by :func:`lowrank.results.write_result` to this header, its rows keeping their values.
    "compression_architecture", "compression_precision", "pruned_test_err1", "quantised_test_err1",
    "dense_baseline_err1",
    # Measured latency (bench.after_run; lowrank.deploy.records): ms per batch-1 eval forward, images/s at
    # throughput_batch, and what measured it. Appended last, migrated like the columns above.
    "latency_ms_b1", "throughput", "throughput_batch", "latency_device", "latency_threads", "latency_torch",
)


def lowrank_home() -> Path:
    """Where runs live: ``$LOWRANK_HOME``, or ``./.lowrank`` in the current directory."""
    return Path(os.environ.get("LOWRANK_HOME", ".lowrank")).expanduser().resolve()


def runs_root(home: Path | None = None) -> Path:
    """The folder holding one sub-folder per run."""
    return (home or lowrank_home()) / "runs"


def now_iso() -> str:
    """Current UTC time as ISO 8601 with seconds, the format of every timestamp we write."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(name: str) -> str:
    """A sortable, unique id: ``YYYYmmdd-HHMMSS-<name>-<4 hex>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40] or "run"
    return f"{stamp}-{safe}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- atomic files and locks

_UMASK = os.umask(0)
os.umask(_UMASK)


def file_mode() -> int:
    """The mode a new file gets under this process's umask (mkstemp's 0600 corrected to it)."""
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_replace(path: Path, mode: str = "wb", sync_dir: bool = True) -> Iterator[IO[Any]]:
    """A file to write whose contents replace ``path`` in one step when the block ends.

    The temporary file is made by ``mkstemp`` in the same directory (an unpredictable
    name, created with O_EXCL, so a planted symlink is never followed), flushed and
    fsynced, then renamed over ``path``; the directory is fsynced so the rename survives
    a power cut (``sync_dir=False`` leaves that to a later replace in the same directory,
    whose directory fsync covers both renames). Readers see the old or the new file, never
    half; an error leaves ``path`` untouched and removes the temporary file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; other users may read runs
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never half."""
    with atomic_replace(path, "w") as handle:
        handle.write(text)


def open_append(path: Path) -> int:
    """An O_APPEND descriptor on ``path`` (created if missing) that refuses a symlink.

    ``O_NOFOLLOW``: a symlink planted where a log or metrics file should be cannot make
    us append to its target (the open fails with ELOOP instead).
    """
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) on ``path``, created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- run directory

# Events appended without an fsync: frequent, and made durable by the next synced event or by
# RunDir.sync_metrics (each fsync makes every earlier line durable too). The trainer syncs
# before each checkpoint, so the lines of every epoch a checkpoint claims are on disk before
# it (a line after the last checkpoint is written again by a resume). Everything else is fsynced.
UNSYNCED_EVENTS = frozenset({"step", "epoch", "eval"})


class RunDir:
    """One run's directory: create it, update its status, append its metrics."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.metric_sinks: list[Any] = []  # callables given every appended event (lowrank/tensorboard.py)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def home(self) -> Path:
        """The LOWRANK_HOME this run belongs to (parent of ``runs/``)."""
        return self.path.parent.parent

    def file(self, name: str) -> Path:
        return self.path / name

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def create(cls, config: dict[str, Any], *, home: Path | None = None,
               run_id: str | None = None, extra_status: dict[str, Any] | None = None,
               files: dict[str, str] | None = None) -> "RunDir":
        """Make a new run directory holding the resolved config and a ``queued`` status.

        ``files``: more files (name -> text, e.g. a trial's tune.json) written before
        status.json, so no scheduler can start the run before they exist.
        """
        root = runs_root(home)
        root.mkdir(parents=True, exist_ok=True)
        run_id = run_id or new_run_id(str(config.get("name", "run")))
        path = root / run_id
        path.mkdir(parents=False, exist_ok=False)
        run = cls(path)
        atomic_write_text(run.file(CONFIG_FILE), yaml.safe_dump(config, sort_keys=False))
        for name, text in (files or {}).items():
            atomic_write_text(run.file(name), text)
        status = {"run_id": run_id, "name": config.get("name", run_id), "state": "queued",
                  "created": now_iso(), "host": socket.gethostname(),
                  "epoch": 0, "epochs": config.get("train", {}).get("epochs"),
                  "provenance": launch_provenance()}  # what code ran (lowrank/provenance.py)
        resources = config.get("resources")
        backend = resources.get("backend") if isinstance(resources, dict) else None
        if backend not in (None, "local"):  # where the worker runs (console.backends): the config says
            status["backend"] = backend
        status.update(extra_status or {})
        atomic_write_text(run.file(STATUS_FILE), json.dumps(status, indent=2))
        return run

    # -- config -----------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The resolved experiment as saved at creation.

        A config.yaml that is missing, binary, not a mapping, has a section that is not a
        mapping, or expands (YAML aliases) past the safe size raises one UserError naming
        the file: relaunch, resume, the scheduler and the worker refuse it cleanly.
        """
        from .errors import UserError
        from .run_files import load_config

        config, problem = load_config(self.file(CONFIG_FILE))
        if problem is not None:
            raise UserError(f"cannot use the run's config: {problem}", file=str(self.file(CONFIG_FILE)),
                            hint="the run directory was damaged or edited by hand; start a new run from its preset")
        return config

    # -- status -----------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        """The current status (an empty dict if the file is missing), checked for readers.

        A status.json that cannot be read or has fields of the wrong type reads as state
        ``unreadable`` with the reason in ``unreadable`` and ``error`` (the recorded state,
        if any, in ``recorded_state``), so every reader shows the run instead of crashing.
        """
        status, problem = load_status(self.file(STATUS_FILE), STATES)
        if problem is None or problem == "status.json is missing":
            return status
        recorded = status.get("state")
        return {**status, "state": UNREADABLE, "recorded_state": recorded if isinstance(recorded, str) else None,
                "unreadable": problem, "error": f"{UNREADABLE}: {problem}"}

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into status.json atomically, under the run's lock.

        Worker and launcher both write status; the lock serialises their
        read-modify-write so neither loses the other's fields. A final state
        (finished/failed/killed) is never overwritten by ``running``.
        """
        with file_lock(self.file(".status.lock")):
            status = read_json(self.file(STATUS_FILE))  # raw: a corrupt file is replaced, not merged
            if status.get("state") in FINAL_STATES and fields.get("state") == "running":
                fields = {k: v for k, v in fields.items() if k != "state"}
            status.update(fields)
            atomic_write_text(self.file(STATUS_FILE), json.dumps(status, indent=2, default=str))
            return status

    # -- metrics ----------------------------------------------------------------------
    def append_metric(self, record: dict[str, Any], sync: bool | None = None) -> None:
        """Append one event to metrics.jsonl with a single O_APPEND write.

        The write alone survives a killed process (readers see it at once); ``sync`` also
        fsyncs the file, against power loss, which makes every earlier line durable too.
        By default every event but those in ``UNSYNCED_EVENTS`` (step, epoch, eval) pays for
        an fsync, so progress lines cost the loop no disk flush (issue 12); the trainer calls
        :meth:`sync_metrics` before each checkpoint instead.
        """
        record = {"time": time.time(), **record}
        line = (json.dumps(record, default=float) + "\n").encode("utf-8")
        fd = open_append(self.file(METRICS_FILE))
        try:
            os.write(fd, line)
            if record.get("event") not in UNSYNCED_EVENTS if sync is None else sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        for sink in self.metric_sinks:
            sink(record)

    def sync_metrics(self) -> None:
        """fsync metrics.jsonl: every line appended so far survives a power cut (called before
        a checkpoint, the state that claims those epochs)."""
        fd = open_append(self.file(METRICS_FILE))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every whole event in metrics.jsonl (a torn last line is skipped)."""
        return read_jsonl(self.file(METRICS_FILE))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; empty dict when missing, unreadable, or not an object."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):  # ValueError: bad JSON or not UTF-8
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl_from(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Whole JSON lines of ``path`` from byte ``offset``, and the offset after the last whole line.

    A trailing partial line (a writer mid-append, or killed) is left for the next call; a
    file shorter than ``offset`` (replaced) is read again from the start.
    """
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) < offset:
                offset = 0
            handle.seek(offset)
            data = handle.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return [], offset
    end = data.rfind(b"\n") + 1
    if end == 0 and len(data) > MAX_LINE_BYTES:  # an unterminated giant line: skip it, never re-read it
        return [], offset + len(data)
    return parse_lines(data[:end]), offset + end


def read_jsonl(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    """Whole JSON lines of ``path`` from byte ``offset``; a trailing partial line is ignored."""
    return read_jsonl_from(path, offset)[0]


def budget_of(config: dict[str, Any], status: dict[str, Any]) -> float | int | None:
    """The parameter budget a run was given: its config's fraction or absolute target, or,
    for a sweep run whose solved hp was pinned, the budget the sweep recorded in its status."""
    sub = config.get("substitute") or {}
    for value in (sub.get("budget"), sub.get("budget_params"), status.get("sweep_budget")):
        if value is not None:
            return value
    return None


# ---------------------------------------------------------------- results.csv

def results_columns(path: Path) -> tuple[str, ...]:
    """The columns to write under (called with the results lock held).

    A file written by an older lowrank whose header is a prefix of :data:`RESULT_COLUMNS` is
    migrated first: rewritten atomically with the full header, every row kept with empty new
    columns. A header of any other shape (edited by hand) is written under as it is, so a row never
    lands in the wrong column and nothing is rewritten that we do not understand.
    """
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        return RESULT_COLUMNS
    except (UnicodeDecodeError, csv.Error):  # damaged: never rewrite it, write under its header as it is
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            return tuple(next(csv.reader(line.replace("\0", "") for line in handle), ())) or RESULT_COLUMNS
    if not rows or not rows[0]:
        return RESULT_COLUMNS
    header = tuple(rows[0])
    if header == RESULT_COLUMNS:
        return RESULT_COLUMNS
    if header != RESULT_COLUMNS[:len(header)]:
        return header
    missing = len(RESULT_COLUMNS) - len(header)
    with atomic_replace(path, "w") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RESULT_COLUMNS)
        writer.writerows(row + [""] * missing if len(row) == len(header) else row for row in rows[1:])
    return RESULT_COLUMNS



def append_result(row: dict[str, Any], home: Path | None = None) -> Path:
    """Append one row to ``$LOWRANK_HOME/results.csv`` under an exclusive lock.

    The header is written by whichever writer finds the file empty (an older header is migrated,
    :func:`results_columns`); the row is built in memory and written with one call so concurrent
    writers never interleave.
    """
    home = home or lowrank_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / RESULTS_FILE
    with file_lock(home / ".results.lock"):
        write_row_locked(path, row)
    return path


def write_row_locked(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to the results file ``path`` (the caller holds the results lock): under the file's
    columns (:func:`results_columns`), the header first into an empty file, one write, fsynced."""
    columns = results_columns(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in columns})
    fd = open_append(path)
    try:
        os.write(fd, buffer.getvalue().encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
