"""The real ``lowrank-console`` in a real terminal (tmux), driven as a user drives it: keys sent with
``send-keys``, the screen read back with ``capture-pane``. The runs table shows the runs of the home,
``x`` then ``y`` kills the highlighted running run (its worker process is gone afterwards), ``q``
quits, and the console's process with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from tui_helpers import make_run

pytestmark = [pytest.mark.tmux, pytest.mark.subprocess,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")]

CONSOLE = Path(sys.executable).with_name("lowrank-console")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=True).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_screen(session: str, predicate, what: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = screen(session)
        if predicate(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"the console never showed {what}; the screen was:\n{text}")


@pytest.fixture
def session(home):
    """A tmux session of 140x40 running ``lowrank-console --home HOME``; killed at the end."""
    name = f"lowrank-test-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("TMUX")}
    command = f"{CONSOLE} --home {home}; echo console-exited-$?; sleep 600"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "140", "-y", "40", command],
                   env={**env, "TERM": "xterm-256color"}, check=True, timeout=30)
    yield name
    subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, timeout=30)


def console_processes(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(part.endswith("lowrank-console") for part in cmdline[:2]) and str(home) in cmdline:
            found.append(proc)
    return found


def test_the_console_in_a_terminal_shows_kills_and_quits(home, session, sleeper):
    worker = sleeper("20240301-120100-wrn-live-a002")
    make_run(home, "20240301-120000-wrn-done-a001", name="tmuxdone")
    make_run(home, "20240301-120100-wrn-live-a002", name="tmuxlive", state="running", epoch=2, proc=worker,
             host=os.uname().nodename)
    shown = wait_screen(session, lambda text: "tmuxdone" in text and "tmuxlive" in text, "both runs")
    assert "running" in shown and "finished" in shown
    assert console_processes(home), "no lowrank-console process for this home"

    # the newest run is highlighted first: the running one; x asks, y kills it
    tmux("send-keys", "-t", session, "x")
    wait_screen(session, lambda text: "kill" in text.lower() and "tmuxlive" in text, "the kill confirmation")
    tmux("send-keys", "-t", session, "y")
    wait_screen(session, lambda text: "killed" in text, "the run as killed")
    try:
        worker.wait(timeout=30)  # the stand-in is this test's child: reaped here
    except psutil.TimeoutExpired:
        pass
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, "the worker survived the kill"

    tmux("send-keys", "-t", session, "q")
    wait_screen(session, lambda text: "console-exited-0" in text, "its exit")
    deadline = time.monotonic() + 10
    while console_processes(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not console_processes(home), "lowrank-console is still running after q"
