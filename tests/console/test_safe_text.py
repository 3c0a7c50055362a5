"""console.safe_text: nothing a file or a user wrote can drive the terminal or break markup."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from console.safe_text import clean, clean_block, dumps, json_safe, markup, visible

HOSTILE = [
    "\x1b]0;pwned\x07",             # OSC: set the terminal title (BEL-terminated)
    "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",  # OSC 8 hyperlink (ST-terminated)
    "\x1b[2J\x1b[H",                # CSI: clear screen, cursor home
    "\x1b[31mred\x1b[0m",           # SGR colours
    "\x9b31m\x9d0;t\x9c",           # 8-bit C1 CSI / OSC / ST
    "\x1bP1$r\x1b\\",               # DCS
    "\x1b7\x1b8\x1bc",              # two-character escapes (save/restore cursor, full reset)
    "bell\x07back\x08del\x7fnul\x00",
    "\u202eevil\u202c",             # bidi override
    "\x1b",                         # lone ESC at the end
]


@pytest.mark.parametrize("text", HOSTILE)
def test_clean_leaves_no_control_characters(text):
    out = clean(text)
    assert all(ch.isprintable() for ch in out), repr(out)
    assert all(ch.isprintable() or ch == "\n" for ch in clean_block(text + "\nline2"))


def test_clean_keeps_the_readable_text():
    assert clean("\x1b[31mred\x1b[0m name") == "red name"
    assert clean("\x1b]0;title\x07quickstart") == "quickstart"
    assert clean("a\nb\tc\r") == "a b c "
    assert clean_block("a\r\nb") == "a\nb"
    assert clean("x" * 50, limit=10) == "x" * 9 + "…"
    assert clean(None) == "" and clean(b"\xffok") == "\ufffdok" and clean(3.5) == "3.5"


@pytest.mark.parametrize("text", ["[/bold]", "[red]x[/red]", "a\\[b]", "ends with \\", "[link=file:///etc]x",
                                  "\\\\[bold]", "[[x]]"])
def test_markup_prints_literally_and_never_raises(text):
    console = Console(record=True, width=200, color_system=None)
    console.print(f"[bold]{markup(text)}[/bold] tail")
    assert console.export_text() == f"{text} tail\n"


def test_visible_shows_escapes_instead_of_obeying_them():
    assert visible("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert visible("ring\x07\tok") == "ring\\x07\tok"
    assert visible("\u202e") == "\\u202e"
    assert "\x1b" not in visible("".join(HOSTILE))


def test_json_safe_turns_non_finite_numbers_into_null():
    value = {"loss": float("nan"), "lr": [float("inf"), -float("inf"), 0.5], "nested": ({"x": 1},)}
    assert json_safe(value) == {"loss": None, "lr": [None, None, 0.5], "nested": [{"x": 1}]}
    text = dumps(value)
    assert json.loads(text) == json_safe(value)
    assert "NaN" not in text and "Infinity" not in text
