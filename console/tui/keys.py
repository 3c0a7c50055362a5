"""The console's keys, in one table: the help screen (``?``) and the command palette
(ctrl+p) are both drawn from it, so neither can drift from the other."""

from __future__ import annotations

# (keys as shown, app action or "" for a table-only key, what it does)
KEYS: tuple[tuple[str, str, str], ...] = (
    ("n", "launch", "launch a run from a preset (file, --set overrides, name, GPU or queue)"),
    ("C", "sweep", "sweep from a preset: methods x budgets x seeds x grid keys, plan preview, then the live compare view"),
    ("x", "kill", "kill the selected run(s), after a confirmation"),
    ("r", "relaunch", "relaunch the selected run(s): a new run from the same config, or resume"),
    ("l", "log", "full log of the highlighted run (follows new lines)"),
    ("c", "compare", "compare the selected runs, or the highlighted run's family (sweep, or model + dataset)"),
    ("T", "studies", "hyperparameter studies (lowrank tune) and their trials"),
    ("/", "filter", "filter runs: words match id/name/model/method; running, failed... keep those states"),
    ("f", "cycle_state", "cycle a state filter: all, running, queued, finished, failed, killed, pruned"),
    ("space", "toggle_mark", "select / unselect the highlighted run and move down"),
    ("a", "mark_all", "select every run shown (again: unselect them)"),
    ("escape", "clear_marks", "clear the selection"),
    ("j / k, ↓ / ↑", "", "move down / up"),
    ("g / G, Home / End", "", "first / last run"),
    ("s", "pick_sort", "sort by a column (pick from a list; or click a header)"),
    ("S", "reverse_sort", "reverse the sort order"),
    ("t", "next_tab", "next detail tab: status, config, log"),
    ("ctrl+p", "", "command palette: every action by name"),
    ("?", "help", "help: the console's keys (this screen)"),
    ("q", "quit", "quit (runs keep going: each worker is in its own session)"),
)

NOTES = (
    "Selected runs (space, a) are overlaid in the curves and are what x, r and c act on.",
    "Curves: train (solid) and validation (dotted) loss and top-1 error, per epoch.",
    "Compare view (c): m switches the x axis between parameters and mult-adds, L between measured latency "
    "(batch 1) and throughput: only runs with a latency, of the highlighted row's device, the title says what "
    "was left out.",
    "Runs live in $LOWRANK_HOME/runs/ (lowrank-console --home PATH to look elsewhere).",
)
