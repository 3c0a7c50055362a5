"""Which run a word on the command line names: the grammar shared by every command.

Accepted, in this order (the first rule that matches decides):

1. the full run id;
2. ``last`` (or ``latest``) -- the newest run; ``last~N`` -- the N-th before it
   (``last~0`` is ``last``, ``last~1`` the run before);
3. a tail of whole ``-`` parts, as the console and the compare legends show ids
   (``a006``, ``live-a006``);
4. a unique prefix of the id (``20261202-1415``) or of its name part (``quickstart-3f``).

Several runs matching the deciding rule is an error listing them; nothing matching is an
error naming the folder searched and the most recent ids. Pure: works on a list of ids
(oldest first), so it is the same for the CLI, the console and tests.
"""

from __future__ import annotations

import re

from lowrank.errors import UserError

_LAST = re.compile(r"^(?:last|latest)(?:~(\d+))?$")


def name_part(run_id: str) -> str:
    """``20240101-120000-quickstart-3f2a`` -> ``quickstart-3f2a``."""
    parts = run_id.split("-", 2)
    return parts[2] if len(parts) == 3 else run_id


def match_run_id(text: str, ids: list[str], where: str = "") -> str:
    """The id in ``ids`` (oldest first) that ``text`` names; :class:`UserError` otherwise."""
    text = text.strip()
    where = f" in {where}" if where else ""
    if text in ids:
        return text
    last = _LAST.match(text)
    if last:
        back = int(last.group(1) or 0)
        if back >= len(ids):
            raise UserError(f"{text!r}: there {'is' if len(ids) == 1 else 'are'} only {len(ids)} run(s){where}",
                            hint="last~0 is the newest run, last~1 the one before")
        return ids[-1 - back]
    if text:
        for rule in (lambda rid: rid.endswith("-" + text),
                     lambda rid: rid.startswith(text) or name_part(rid).startswith(text)):
            matches = [rid for rid in ids if rule(rid)]
            if len(matches) == 1:
                return matches[0]
            if matches:
                shown = ", ".join(matches[:10]) + (f" ... ({len(matches)} in all)" if len(matches) > 10 else "")
                raise UserError(f"{text!r} matches {len(matches)} runs: {shown}",
                                hint="give a longer id, or last / last~N for the newest runs")
    recent = ", ".join(ids[-5:]) or "none yet"
    raise UserError(f"no run matches {text!r}{where}", hint=f"recent runs: {recent}")


def resolve_in(root, text: str):
    """The :class:`~lowrank.rundir.RunDir` under runs folder ``root`` that ``text`` names.

    A path to a run directory (holding status.json and config.yaml) is accepted too.
    """
    from pathlib import Path

    from lowrank.rundir import CONFIG_FILE, STATUS_FILE, RunDir

    root = Path(root)
    as_path = Path(text.strip()).expanduser()
    if (as_path / STATUS_FILE).exists() and (as_path / CONFIG_FILE).exists():
        return RunDir(as_path.resolve())
    ids = sorted(path.name for path in root.iterdir()
                 if path.is_dir() and (path / STATUS_FILE).exists()) if root.is_dir() else []
    return RunDir(root / match_run_id(text, ids, str(root)))
