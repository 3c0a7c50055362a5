"""The selected run: curves (several runs overlaid) beside tabs with its status/error,
its resolved config and the tail of its log."""

from __future__ import annotations

from typing import Any

import yaml
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static, TabbedContent, TabPane

from lowrank.provenance import provenance_lines

from console.ranks_text import ranks_line
from console.safe_text import clean, clean_block, visible

from .curves import CurvesView
from .format import STATE_STYLES, count, duration, number, pct
from .messages import Detail

STATUS_FIELDS = (("waiting", "waiting"), ("pid", "pid"), ("host", "host"), ("device", "device"), ("gpus", "gpus"), ("hp", "hp"),
                 ("created", "created"), ("started", "started"), ("ended", "ended"), ("heartbeat", "heartbeat"),
                 ("exit_code", "exit code"), ("preset", "preset"), ("sweep", "sweep"),
                 ("relaunched_from", "relaunched from"), ("backend", "backend"), ("slurm_job_id", "slurm job"),
                 ("slurm_state", "slurm state"), ("slurm_node", "slurm node"))


def field_label(label: str) -> str:
    """A label padded to 16 cells, always followed by a blank (``CUDA (torch build) 13.0``)."""
    return f"{label:<15} "


def status_text(record: Any) -> Text:
    """State, error, progress and the numbers a researcher checks first."""
    info, status = record.info, record.status
    out = Text()
    out.append(f"{clean(info.name or info.run_id)}\n", style="bold")
    out.append(clean(info.state_shown), style=STATE_STYLES.get(info.state, ""))
    out.append(f"  epoch {info.epoch if info.epoch is not None else '-'}/{info.epochs or '-'}"
               f"  elapsed {duration(info.elapsed_s)}  eta {duration(info.eta_s)}\n")
    if info.error:
        out.append(f"error: {clean_block(info.error)}\n", style="bold red")
    out.append(f"params {count(status.get('params'))} (dense {count(status.get('dense_params'))})"
               f"  mult-adds {count(status.get('macs'))}\n")
    val = "val (= test set)" if status.get("val_is_test") is True else "val"
    out.append(f"loss {number(info.last_loss)}  best {val} err {pct(info.best_err1)}"
               f"  test err {pct(status.get('test_err1'))}\n")
    for key, label in STATUS_FIELDS:
        if status.get(key) not in (None, "", []):
            out.append(field_label(label), style="dim")
            out.append(f"{clean(status[key])}\n")
    ranks = ranks_line(status)
    if ranks:
        out.append(field_label("ranks"), style="dim")
        out.append(f"{clean(ranks)}\n")
    for label, value in provenance_lines(status.get("provenance")):  # what code ran (lowrank/provenance.py)
        out.append(field_label(label), style="dim")
        out.append(f"{clean(value)}\n")
    out.append(field_label("id"), style="dim")
    out.append(f"{info.run_id}\n")
    out.append(field_label("dir"), style="dim")
    out.append(clean(info.path))
    return out


class RunDetail(Horizontal):
    """Curves on the left, status / config / log tabs on the right."""

    DEFAULT_CSS = """
    RunDetail { height: 1fr; }
    RunDetail TabbedContent { width: 2fr; height: 1fr; }
    RunDetail TabPane { padding: 0 1; height: 1fr; }
    RunDetail VerticalScroll { height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown_key: tuple | None = None
        self._config_of: str | None = None
        self.overlaid: list[str] = []  # labels of the runs in the curves (tests, benchmarks)

    def compose(self) -> ComposeResult:
        yield CurvesView()
        with TabbedContent(id="detail-tabs"):
            with TabPane("status", id="tab-status"):
                yield VerticalScroll(Static("no run selected", id="status-text"))
            with TabPane("config", id="tab-config"):
                yield VerticalScroll(Static("", id="config-text"))
            with TabPane("log", id="tab-log"):
                yield VerticalScroll(Static("", id="log-text"), id="log-scroll")

    def show(self, detail: Detail) -> None:
        """Redraw what changed since the last call."""
        if detail.key == self._shown_key:
            return
        if not self.query(CurvesView):
            return  # children not composed yet (or being torn down): the next update redraws
        curves_changed = self._shown_key is None or detail.key[0] != self._shown_key[0]
        self._shown_key = detail.key
        if curves_changed:
            self.overlaid = [label for label, _ in detail.curves]
            self.query_one(CurvesView).show(detail.curves)
        record = detail.record
        if record is None:
            self.query_one("#status-text", Static).update("no run selected")
            self.query_one("#config-text", Static).update("")
            self.query_one("#log-text", Static).update("")
            self._config_of = None
            return
        self.query_one("#status-text", Static).update(status_text(record))
        if self._config_of != record.run_id:
            self._config_of = record.run_id
            text = yaml.safe_dump(record.config, sort_keys=False) if record.config else "(config.yaml unreadable)"
            self.query_one("#config-text", Static).update(Text(clean_block(text)))
        # the log as written, control characters shown escaped (an OSC in a log line must not act)
        self.query_one("#log-text", Static).update(Text("\n".join(map(visible, detail.log_lines)) or "(empty log)"))
        self.query_one("#log-scroll", VerticalScroll).scroll_end(animate=False)

    def next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        order = ["tab-status", "tab-config", "tab-log"]
        tabs.active = order[(order.index(tabs.active) + 1) % len(order)] if tabs.active in order else order[0]
