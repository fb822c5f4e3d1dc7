"""Progress with ETA: the arithmetic, the plain-line cadence off a terminal, the live bar, the sweep's counts."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from orchestrator.progress import Progress, eta_seconds, format_duration, rate_text


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_mean_time_per_unit_of_this_session_times_the_units_left():
    # 5 rounds were done before a resume; 3 more took 30 s: 10 s each, 12 left
    assert eta_seconds(total=20, done=8, initial=5, elapsed=30.0) == pytest.approx(120.0)
    assert eta_seconds(total=20, done=20, initial=5, elapsed=30.0) == 0.0
    assert eta_seconds(total=20, done=5, initial=5, elapsed=30.0) is None  # nothing measured yet
    assert eta_seconds(total=4, done=1, initial=0, elapsed=0.0) is None


def test_durations_and_rates_are_written_for_people():
    assert format_duration(65) == "1m05s" and format_duration(0.4) == "0m00s" and format_duration(7380) == "2h03m"
    assert rate_text(done=4, initial=0, elapsed=10.0, unit="round") == "2.5 s/round"
    assert rate_text(done=13, initial=3, elapsed=2.0, unit="round") == "5.0 rounds/s"
    assert rate_text(done=3, initial=3, elapsed=2.0, unit="round") == "- s/round"


def test_off_a_terminal_a_plain_line_comes_every_period_and_at_the_end():
    # Prepare
    clock, lines = FakeClock(), []
    progress = Progress(total=10, every=30.0, live=None, stream=io.StringIO(), log=lines.append, clock=clock)
    assert not progress.live  # a StringIO is not a terminal
    # Execute: updates at 10 s, 31 s, 40 s, 62 s, and the last unit at 65 s
    for t, done in ((10, 1), (31, 2), (40, 3), (62, 5), (65, 10)):
        clock.now = 1000.0 + t
        progress.update(done)
    # Assert
    assert lines == [
        "[progress 0m31s] 2/10 rounds, 15.5 s/round, ETA 2m04s",   # 8 left x 15.5 s
        "[progress 1m02s] 5/10 rounds, 12.4 s/round, ETA 1m02s",   # 5 left x 12.4 s
        "[progress 1m05s] 10/10 rounds, 6.5 s/round, ETA 0m00s",   # the end, 3 s after the last line
    ]


def test_plain_false_leaves_the_lines_to_the_caller_and_status_still_has_the_eta():
    clock, lines = FakeClock(), []
    progress = Progress(total=4, initial=1, every=0.0, live=False, log=lines.append, clock=clock)
    clock.now += 20.0
    progress.update(2, plain=False)
    assert lines == [] and progress.status() == "2/4 rounds, 20.0 s/round, ETA 0m40s"
    progress.write("[round 2/4] accuracy=0.5")
    assert lines == ["[round 2/4] accuracy=0.5"]


def test_in_a_terminal_the_bar_is_redrawn_with_rate_and_eta_and_messages_go_above_it():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(total=10, every=30.0, desc="fedplora", live=True, stream=stream, clock=clock)
    clock.now += 8.0
    progress.update(2, extra="2/5 trials")
    progress.write("[round 2/10] accuracy=0.6")
    progress.close()
    text = stream.getvalue()
    assert "fedplora" in text and "2/10" in text and "4.0 s/round, ETA 0m32s, 2/5 trials" in text
    assert "[round 2/10] accuracy=0.6\n" in text
    assert "[progress" not in text  # no plain lines in a terminal


def _trials(tmp_path):
    from sweeps.spec import parse_spec
    from sweeps.trials import expand

    spec = parse_spec({"base": {"rounds": 3, "model": {"name": "tiny-llama"},
                                "data": {"dataset": "rotten_tomatoes_instruct"}},
                       "axes": {"variants": [{"label": "A", "set": {"method.name": "fedplora"}},
                                             {"label": "B", "set": {"method.name": "flora"}}],
                                "seeds": [0, 1]}})
    return expand(spec)


def test_sweep_progress_counts_trial_rounds_resumed_and_errored(tmp_path):
    from sweeps.progress import SweepProgress

    # Prepare: 4 trials x 3 rounds; one was resumed after 2 rounds, one had errored after 1 round
    trials = _trials(tmp_path)
    ids = [t.trial_id for t in trials]
    for tid, state in ((ids[0], {"rounds_completed": 2, "status": "running"}),
                       (ids[1], {"rounds_completed": 1, "status": "error"})):
        (tmp_path / "trials" / tid).mkdir(parents=True)
        (tmp_path / "trials" / tid / "trial.json").write_text(json.dumps(state))
    lines: list[str] = []
    progress = SweepProgress(trials, tmp_path, summary_every=3600, log=lines.append)
    # Execute
    progress.setup()
    assert (progress.progress.total, progress.progress.initial) == (3 + 1 + 3 + 3, 3)
    running = SimpleNamespace(config={"trial": ids[2]}, status="RUNNING", last_result={"round": 1})
    progress.on_trial_result(1, [], running, {"round": 1, "rouge_l": 0.1})
    failed = SimpleNamespace(config={"trial": ids[3]}, status="ERROR", last_result={"round": 0}, error_file=None)
    progress.on_trial_error(1, [], failed)
    # Assert: trial 3's three rounds leave the total; 4 of 7 done, 1 of them in this session
    assert (progress.progress.done, progress.progress.total) == (4, 7)
    summary = progress.summary([running, failed])
    assert "1 running (rounds 1/3)" in summary and "| 4/7 rounds, " in summary and ", ETA " in summary
    assert lines[-1].startswith("[1/4 ERROR ")
