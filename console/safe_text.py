"""Text from files and users, made safe to print: no terminal control, no live markup.

Every string the CLI or the TUI shows that came from a user or a file (run names, preset
names, error messages, log lines, paths, metric keys) goes through this module first. A
run name like ``"\\x1b]0;pwned\\x07"`` would otherwise retitle the terminal (OSC), move the
cursor or clear the screen (CSI), and an error containing ``[/bold]`` would crash rich
(``MarkupError``) the moment it was printed as markup.

- :func:`clean`: one-line display text -- escape sequences removed, other control
  characters dropped, newlines/tabs turned into spaces (table cells, notifications titles).
- :func:`clean_block`: as :func:`clean` but keeps newlines (multi-line error messages).
- :func:`markup`: :func:`clean` + rich markup escaped, for strings interpolated into rich
  markup (CLI tables and messages). Textual's markup differs from rich's (``[$var]`` is a
  variable there): in the TUI never interpolate such text into markup -- pass
  ``markup=False`` (``notify``, ``Label``, ``Static``) or a ``rich.text.Text`` of :func:`clean`.
- :func:`visible`: control characters shown escaped (``\\x1b[31m`` -> ``\\x1b[31m`` as text),
  for the log views, where the user wants to see what the worker really wrote.
- :func:`json_safe`: non-finite floats -> ``None`` so ``--json`` output is always valid JSON.

Pure and import-light (no rich, no torch at import): the TUI's row formatter calls it on
a thread for every cell.
"""

from __future__ import annotations

import math
import re
from typing import Any

# ANSI / ECMA-48 escape sequences, in both the 7-bit (ESC ...) and 8-bit (C1) forms:
#   CSI  ESC [ ... final   |  \x9b ... final
#   OSC/DCS/SOS/PM/APC  ESC ] P X ^ _ ... (BEL | ST)   |  \x9d \x90 \x98 \x9e \x9f ... (BEL | ST)
#   two-character escapes  ESC <any>
_ESCAPES = re.compile(
    r"""
      (?:\x1b\[|\x9b) [0-?]* [ -/]* [@-~]                          # CSI: params, intermediates, final
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) .*? (?:\x07|\x1b\\|\x9c|$)  # string commands up to BEL/ST
    | \x1b [ -/]* [0-~]                                            # nF / Fp / Fe / Fs two-char escapes
    | \x1b                                                         # a lone ESC
    """,
    re.VERBOSE | re.DOTALL,
)
# C0 (except \t \n \r, handled per function), DEL, C1, and the Unicode bidi overrides
# that reorder what the terminal shows (CVE-2021-42574 "trojan source").
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f\u2028\u2029\x85]")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def clean_block(value: Any) -> str:
    """``value`` as text without escape sequences or control characters; keeps ``\\n``."""
    text = _ESCAPES.sub("", _text(value))
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = re.sub(r"[\u2028\u2029\x85]", "\n", text)
    return _CONTROLS.sub("", text)


def clean(value: Any, limit: int | None = None) -> str:
    """One line of display text: :func:`clean_block` with line breaks as spaces, cut at ``limit``."""
    text = _CONTROLS.sub("", _LINE_BREAKS.sub(" ", _ESCAPES.sub("", _text(value))))
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def markup(value: Any, limit: int | None = None) -> str:
    """:func:`clean`, then rich markup escaped: safe inside a ``Console.print`` markup string."""
    return escape_markup(clean(value, limit))


def markup_block(value: Any) -> str:
    """:func:`clean_block`, then rich markup escaped (multi-line error messages)."""
    return escape_markup(clean_block(value))


def escape_markup(text: str) -> str:
    """Escape rich/Textual markup: every ``[`` that could open a tag becomes ``\\[``.

    Every ``[`` is escaped, not only those rich would parse as a tag today (Textual's
    markup parser differs from rich's); backslashes before a ``[`` are doubled so they stay
    literal, and a trailing backslash is doubled so it cannot escape a tag put after it.
    """
    text = re.sub(r"(\\*)\[", lambda m: m.group(1) * 2 + "\\[", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def visible(value: Any) -> str:
    """Control characters shown, not obeyed: ESC -> ``\\x1b``, BEL -> ``\\x07`` (tabs kept).

    For log views: a log line that carries colour codes or an OSC title stays readable and
    shows exactly what was written, and the terminal interprets none of it.
    """
    text = _text(value)

    def show(match: re.Match[str]) -> str:
        char = match.group(0)
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]", show, text)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` where NaN and +-Infinity are ``None`` (JSON has no such numbers).

    Dicts, lists and tuples are walked; everything else is returned as is. Use with
    ``json.dumps(..., allow_nan=False)`` so a missed case fails loudly instead of printing
    invalid JSON.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always yields valid JSON: non-finite numbers become ``null``."""
    import json

    kwargs.setdefault("default", str)
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
