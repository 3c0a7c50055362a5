"""The ``/`` filter: an input under the table that filters runs as you type.

Words naming a state (``running``, ``state:failed``) keep runs in those states; other
words must appear in the id, name, model or method. Enter keeps the filter, Escape clears it.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    """Hidden until ``/``; posts :class:`FilterBar.QueryChanged` on every keystroke."""

    DEFAULT_CSS = """
    FilterBar { dock: bottom; display: none; margin: 0 0 1 0; border: tall $accent; }
    FilterBar.-open { display: block; }
    """

    BINDINGS = [Binding("escape", "clear_and_close", "Clear filter", show=False)]

    class QueryChanged(Message):
        """The filter text changed (``done``: the user pressed Enter or Escape)."""

        def __init__(self, query: str, done: bool = False) -> None:
            super().__init__()
            self.query = query
            self.done = done

    def __init__(self, **kwargs) -> None:
        super().__init__(placeholder="filter: words match id/name/model/method; running, failed... pick states",
                         **kwargs)

    def open(self) -> None:
        self.add_class("-open")
        self.focus()

    def close(self) -> None:
        self.remove_class("-open")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.QueryChanged(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.close()
        self.post_message(self.QueryChanged(event.value, done=True))

    def action_clear_and_close(self) -> None:
        self.value = ""
        self.close()
        self.post_message(self.QueryChanged("", done=True))
