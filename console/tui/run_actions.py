"""The console's run actions -- ``n`` launch, ``C`` sweep, ``x`` kill, ``r`` relaunch -- as an App mixin.

The dialogs run on the UI thread; everything that blocks (listing presets, validating a
config -- which imports torch --, starting workers, killing with its grace period) runs
in thread workers and reports back with :class:`~.messages.ActionDone` notifications.
A bad preset, nothing selected or nothing to kill is a notification, never a crash.
"""

from __future__ import annotations

from textual import work

from lowrank.errors import UserError
from lowrank.rundir import FINAL_STATES

from . import actions
from .confirm_screen import ConfirmScreen
from .launch_screen import LaunchRequest, LaunchScreen
from .messages import ActionDone
from .relaunch_screen import RelaunchRequest, RelaunchScreen


class RunActions:
    """Mixed into :class:`~.app.LowrankConsole` (uses its ``home``, ``records``, ``snapshot``)."""

    # -- n: launch --------------------------------------------------------------------------
    def action_launch(self) -> None:
        self.open_launch()

    @work(thread=True, exclusive=True, group="launch-dialog")
    def open_launch(self) -> None:
        """List the presets off the UI thread, then show the dialog."""
        dirs = self.presets_dirs or actions.presets_dirs()
        presets = actions.list_presets(dirs)
        if not presets:
            where = ", ".join(map(str, dirs)) or "presets/ (none found; set $LOWRANK_PRESETS)"
            self.post_message(ActionDone(f"no presets (*.yaml) in {where}", "error", "cannot launch"))
            return
        screen = LaunchScreen(presets, dirs, actions.placement_options(self.snapshot))
        self.call_from_thread(self.push_screen, screen, self._launch_chosen)

    def _launch_chosen(self, request: LaunchRequest | None) -> None:
        if request is not None:
            self.notify(f"validating {request.preset.name}...", timeout=3)
            self.launch_in_thread(request)

    @work(thread=True, group="actions")
    def launch_in_thread(self, request: LaunchRequest) -> None:
        try:
            run, how = actions.launch_preset(self.home, request.preset, request.overrides, request.placement)
        except UserError as error:  # ConfigError: nothing was created
            self.post_message(ActionDone(error.render(), "error", f"cannot launch {request.preset.name}"))
            return
        except Exception as error:  # a bug: say it, never crash the console
            self.post_message(ActionDone(f"{type(error).__name__}: {error}", "error", "launch failed"))
            return
        self.post_message(ActionDone(f"{run.run_id}: {how}", title="launched"))

    # -- C: sweep ---------------------------------------------------------------------------
    def action_sweep(self) -> None:
        self.open_sweep()

    @work(thread=True, exclusive=True, group="sweep-dialog")
    def open_sweep(self) -> None:
        """List the presets and the registry's methods off the UI thread, then show the dialog."""
        from . import sweep_actions
        from .sweep_screen import SweepScreen, sweep_placements

        dirs = self.presets_dirs or actions.presets_dirs()
        presets = actions.list_presets(dirs)
        if not presets:
            where = ", ".join(map(str, dirs)) or "presets/ (none found; set $LOWRANK_PRESETS)"
            self.post_message(ActionDone(f"no presets (*.yaml) in {where}", "error", "cannot sweep"))
            return
        try:
            methods = sweep_actions.method_choices()
        except (UserError, ValueError) as error:
            self.post_message(ActionDone(error.render() if isinstance(error, UserError) else str(error), "error",
                                         "cannot sweep"))
            return
        screen = SweepScreen(self.home, presets, dirs, methods, sweep_placements(self.snapshot))
        self.call_from_thread(self.push_screen, screen, self._sweep_chosen)

    def _sweep_chosen(self, request) -> None:
        if request is not None:
            self.notify(f"launching the sweep of {request.preset.name}...", timeout=3)
            self.sweep_in_thread(request)

    @work(thread=True, group="actions")
    def sweep_in_thread(self, request) -> None:
        """Create and queue the sweep's runs, then follow it live in the compare view."""
        from . import sweep_actions

        try:
            answer = sweep_actions.launch(self.home, request)
        except UserError as error:
            answer = sweep_actions.SweepAnswer(False, error.render())
        if not answer.ok:
            self.post_message(ActionDone(answer.text, "error", f"cannot sweep {request.preset.name}"))
            return
        self.post_message(ActionDone(answer.text, title="sweep launched"))
        self.call_from_thread(self.follow_sweep, answer.sweep)

    def follow_sweep(self, sweep_id: str) -> None:
        """The compare view of ``sweep_id``, re-read every second: points appear as its runs do."""
        from .compare_screen import CompareScreen, sweep_members

        self.push_screen(CompareScreen(*sweep_members(self.records, sweep_id),
                                       live=lambda: sweep_members(self.records, sweep_id)))

    # -- x: kill ----------------------------------------------------------------------------
    def action_kill(self) -> None:
        targets = self.runs_table.targets()
        if not targets:
            self.notify("nothing selected: highlight a run or select runs with space", severity="warning")
            return
        live = [rid for rid in targets if rid in self.records and self.records[rid].info.state not in FINAL_STATES]
        if not live:
            states = ", ".join(f"{rid} is {self.records[rid].info.state}" for rid in targets if rid in self.records)
            self.notify(f"nothing to kill: {states}", severity="warning")
            return
        body = "\n".join(f"{rid}  ({self.records[rid].info.state})" for rid in live)
        skipped = len(targets) - len(live)
        if skipped:
            body += f"\n({skipped} selected run(s) already ended: left alone)"
        self.push_screen(ConfirmScreen(f"Kill {len(live)} run(s)?", body, yes="Kill"),
                         lambda yes: self.kill_in_thread(live) if yes else None)

    @work(thread=True, group="actions")
    def kill_in_thread(self, run_ids: list[str]) -> None:
        for rid in run_ids:
            try:
                text = actions.kill(self.home, rid)
                self.post_message(ActionDone(text, "information", "killed"))
            except UserError as error:
                self.post_message(ActionDone(error.render(), "error", f"cannot kill {rid}"))
            except Exception as error:
                self.post_message(ActionDone(f"{type(error).__name__}: {error}", "error", f"kill {rid} failed"))

    # -- r: relaunch ------------------------------------------------------------------------
    def action_relaunch(self) -> None:
        targets = self.runs_table.targets()
        if not targets:
            self.notify("nothing selected: highlight a run or select runs with space", severity="warning")
            return
        self.push_screen(RelaunchScreen(targets, actions.placement_options(self.snapshot)), self._relaunch_chosen)

    def _relaunch_chosen(self, request: RelaunchRequest | None) -> None:
        if request is not None:
            self.relaunch_in_thread(request)

    @work(thread=True, group="actions")
    def relaunch_in_thread(self, request: RelaunchRequest) -> None:
        for rid in request.run_ids:
            try:
                run, how = actions.relaunch_run(self.home, rid, request.resume, request.placement)
                what = "resumed" if request.resume else f"relaunched as {run.run_id}"
                self.post_message(ActionDone(f"{rid} {what}: {how}", title="relaunch"))
            except UserError as error:
                self.post_message(ActionDone(error.render(), "error", f"cannot relaunch {rid}"))
            except Exception as error:
                self.post_message(ActionDone(f"{type(error).__name__}: {error}", "error", f"relaunch {rid} failed"))
