"""``?``: the keys of the console."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

HELP = """\
# lowrank console

| key | action |
|---|---|
| `n` | launch a run from a preset (file, `--set` overrides, GPU or queue) |
| `k` | kill the selected run(s), after a confirmation |
| `r` | relaunch: a new run from the same config, or resume from its checkpoint |
| `l` | full log of the highlighted run (follows new lines) |
| `c` | compare finished runs of the highlighted run's family (same sweep, or model + dataset) |
| `/` | filter runs: words match id/name/model/method; `running`, `failed`... keep those states |
| `f` | cycle a state filter: all, running, queued, finished, failed, killed |
| `space` | select / unselect a run (selected runs are overlaid in the curves and are what `k`/`r` act on) |
| `s` / `S` | sort by the next column / reverse (or click a header) |
| `t` | next detail tab: status, config, log |
| `ctrl+p` | command palette: every action by name |
| `?` | this help |
| `q` | quit (runs keep going: each worker is in its own session) |

Curves: train (solid) and validation (dotted) loss and top-1 error, per epoch.
Runs live in `$LOWRANK_HOME/runs/` (`lowrank-console --home PATH` to look elsewhere).
"""


class HelpScreen(ModalScreen[None]):
    """The key table; Escape, ``?`` or ``q`` closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; height: auto; max-height: 90%; border: thick $accent; background: $surface; padding: 0 1;
    }
    """

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it is slow to import: not at start-up

        with VerticalScroll():
            yield Markdown(HELP)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
