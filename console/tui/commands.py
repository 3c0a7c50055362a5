"""Every console action in the command palette (ctrl+p), by name, with its key (from :mod:`.keys`)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .keys import KEYS

# (title, app action, key) -- the same actions the key bindings run
COMMANDS: tuple[tuple[str, str, str], ...] = tuple(
    (text[0].upper() + text[1:], action, key) for key, action, text in KEYS if action)


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
