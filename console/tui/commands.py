"""Every console action in the command palette (ctrl+p), by name, with its key."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, app action, key) -- the same actions the key bindings run
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Launch a run from a preset", "launch", "n"),
    ("Kill the selected run(s)", "kill", "k"),
    ("Relaunch the selected run(s): new run or resume", "relaunch", "r"),
    ("Show the full log of the highlighted run", "log", "l"),
    ("Compare finished runs of the highlighted run's family", "compare", "c"),
    ("Filter runs by state or text", "filter", "/"),
    ("Cycle the state filter", "cycle_state", "f"),
    ("Select / unselect the highlighted run", "toggle_mark", "space"),
    ("Sort runs by the next column", "cycle_sort", "s"),
    ("Next detail tab (status, config, log)", "next_tab", "t"),
    ("Help: the console's keys", "help", "?"),
    ("Quit the console (runs keep going)", "quit", "q"),
)


class ConsoleCommands(Provider):
    """Offers :data:`COMMANDS`; choosing one runs the same action as its key."""

    def _run(self, action: str):
        return partial(self.app.run_action, action)

    async def discover(self) -> Hits:
        for title, action, key in COMMANDS:
            yield DiscoveryHit(title, self._run(action), help=f"key: {key}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, key in COMMANDS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._run(action), help=f"key: {key}")
