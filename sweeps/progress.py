"""Compact sweep progress: one line per finished trial, and rounds done with an ETA (a Tune callback).

Progress is counted in trial rounds (every trial's rounds summed), so the ETA from the measured rate
(:mod:`orchestrator.progress`) accounts for trials running side by side; rounds done before a resume count
as done, not towards the rate. An errored trial's remaining rounds leave the total. In a terminal the
count is a live bar; elsewhere the periodic summary line carries it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator.progress import Progress, format_duration
from sweeps.trials import TrialSpec
from sweeps.tune_runner import TRIALS_DIR, read_trial_state


class SweepProgress(tune.Callback):
    """Prints ``[3/14 done 2m10s] FLoRA | IID | seed 0: accuracy=0.7120 (best 0.7200), 12 rounds, 61.3 s``.

    Every ``summary_every`` seconds (not in a terminal, where the live bar shows it): completed / errors /
    running (with their rounds) / pending, and rounds done, rate and ETA. ``live``: ``None`` = a live bar
    when ``log`` is ``print`` and stdout is a terminal.
    """

    def __init__(self, trials: list[TrialSpec], sweep_dir: Path, summary_every: float = 60.0,
                 log: Callable[[str], None] = print, live: bool | None = None):
        self.sweep_dir = sweep_dir
        self.specs = {t.trial_id: t for t in trials}
        self.summary_every = summary_every
        self.log = log
        self.t0 = time.perf_counter()
        self.last_summary = self.t0
        self.finished: dict[str, str] = {}
        self.best: dict[str, float] = {}
        self.noted_trials: set[str] = set()  # trials whose data notes were read
        self.notes_shown: set[str] = set()
        self.live = live if live is not None else (None if log is print else False)
        self.rounds_total = {t.trial_id: t.config.rounds for t in trials}
        self.rounds_done: dict[str, int] = {}
        self.progress: Progress | None = None

    def setup(self, **info: Any) -> None:
        """Called by Tune once before the first trial starts (also after a restore)."""
        self.t0 = self.last_summary = time.perf_counter()
        for tid in self.specs:
            state = read_trial_state(self.sweep_dir / TRIALS_DIR / tid)
            self.rounds_done[tid] = int(state.get("rounds_completed") or 0)
            if state.get("status") == "error":
                self.rounds_total[tid] = self.rounds_done[tid]
        self.progress = Progress(sum(self.rounds_total.values()), sum(self.rounds_done.values()), unit="round",
                                 desc="sweep", every=self.summary_every, log=self.log, live=self.live)

    def _elapsed(self) -> str:
        return format_duration(time.perf_counter() - self.t0)

    def _write(self, line: str) -> None:
        if self.progress is not None:
            self.progress.write(line)
        else:
            self.log(line)

    def _advance(self) -> None:
        if self.progress is not None:
            self.progress.update(sum(self.rounds_done.values()), extra=f"{len(self.finished)}/{len(self.specs)} "
                                 "trials", total=sum(self.rounds_total.values()), plain=False)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Leave the live bar's last state on screen."""
        if self.progress is not None:
            self.progress.close()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._data_notes(trial.config.get("trial"))
        spec = self.specs.get(trial.config.get("trial"))
        if spec is not None and isinstance(result.get("round"), int | float):
            self.rounds_done[spec.trial_id] = max(int(result["round"]), self.rounds_done.get(spec.trial_id, 0))
            self._advance()
        if spec is not None and isinstance(result.get(spec.metric), int | float):
            value = float(result[spec.metric])
            if value == value:
                self.best[spec.trial_id] = max(value, self.best.get(spec.trial_id, value))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial, "ERROR")

    def _finished(self, trial: Any, kind: str) -> None:
        tid = trial.config.get("trial")
        spec = self.specs.get(tid)
        if spec is None:
            return
        self.finished[tid] = kind
        if kind == "done":
            self.rounds_done[tid] = self.rounds_total[tid]
        else:  # the rounds it will never run leave the total
            self.rounds_total[tid] = self.rounds_done.get(tid, 0)
        self._advance()
        result = trial.last_result or {}
        own = read_trial_state(self.sweep_dir / TRIALS_DIR / tid)
        if kind == "done":
            value = result.get(spec.metric)
            shown = f"{spec.metric}={value:.4f}" if isinstance(value, int | float) else f"{spec.metric}=n/a"
            if tid in self.best:
                shown += f" (best {self.best[tid]:.4f})"
            detail = f"{shown}, {result.get('round', '?')} rounds"
        else:
            detail = own["error"][:300] if own.get("error") else _error_text(trial)
        wall = own.get("wall_seconds", result.get("trial_wall_seconds"))
        wall_text = f", {wall:.1f} s" if isinstance(wall, int | float) else ""
        self._write(f"[{len(self.finished)}/{len(self.specs)} {kind} {self._elapsed()}] {spec.describe()}: "
                    f"{detail}{wall_text}")
        self._data_notes(tid)

    def _data_notes(self, tid: str | None) -> None:
        """Print the data notes of a trial (``trial.json``) that no earlier trial printed, once per trial."""
        if tid is None or tid in self.noted_trials:
            return
        notes = read_trial_state(self.sweep_dir / TRIALS_DIR / tid).get("data_notes")
        if notes is None:
            return
        self.noted_trials.add(tid)
        for note in notes:
            if note not in self.notes_shown:
                self.notes_shown.add(note)
                self._write(f"data note: {note}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.progress is not None and self.progress.live:
            self._advance()  # redraw: the elapsed time moves on
            return
        now = time.perf_counter()
        if now - self.last_summary < self.summary_every:
            return
        self.last_summary = now
        self.log(self.summary(trials))

    def summary(self, trials: list) -> str:
        """One summary line with the rounds done, the rate and the ETA.

        ``[summary 4m00s] 5/14 completed, 1 error, 2 running (rounds 3/12, 7/12), 6 pending | 75/168 rounds,
        3.2 s/round, ETA 7m40s``.
        """
        done = sum(1 for t in trials if t.status == "TERMINATED")
        errors = sum(1 for t in trials if t.status == "ERROR")
        running = [t for t in trials if t.status == "RUNNING"]
        pending = len(self.specs) - done - errors - len(running)
        rounds = []
        for t in running:
            spec = self.specs.get(t.config.get("trial"))
            r = (t.last_result or {}).get("round", 0)
            rounds.append(f"{r}/{spec.config.rounds if spec else '?'}")
        running_text = f"{len(running)} running" + (f" (rounds {', '.join(rounds)})" if rounds else "")
        eta = f" | {self.progress.status()}" if self.progress is not None else ""
        return (f"[summary {self._elapsed()}] {done}/{len(self.specs)} completed, {errors} error"
                f"{'s' if errors != 1 else ''}, {running_text}, {pending} pending{eta}")


def _error_text(trial: Any) -> str:
    err = getattr(trial, "error_file", None)
    text = ""
    try:
        if err:
            with open(err) as f:
                text = f.read()
    except OSError:
        pass
    for line in reversed(text.strip().splitlines()):
        if "failed:" in line:
            return line.split("failed:", 1)[1].strip()[:300]
    return (text.strip().splitlines() or ["failed (see trial.json)"])[-1][:300]
