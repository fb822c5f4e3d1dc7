"""Ctrl-C and SIGTERM stop a run or a sweep within seconds, with a whole checkpoint, no Ray process left
behind, and the exact command that resumes it printed instead of a traceback (real subprocesses, signalled)."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/tiny_llama_smoke.yaml"
TAG = "HETFEDLORA_SIGNAL_TEST"


def spawn(module: str, *args: str) -> tuple[subprocess.Popen, str]:
    """Start ``python -m module args`` with a unique tag in its environment (inherited by its Ray processes)."""
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG: tag, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, tag


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries ``TAG=tag``: the command and every Ray process it started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if f"{TAG}={tag}".encode() in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_for(condition, timeout: float, proc: subprocess.Popen) -> None:
    t0 = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.communicate()[1][-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen, tag: str, signum: int) -> tuple[int, str, float]:
    """Send ``signum``; returns the exit code, stderr + stdout, and seconds until every tagged process ended."""
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    print(f"command exited {time.monotonic() - t0:.1f} s after {signal.Signals(signum).name}")
    while tagged_processes(tag) and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    return proc.returncode, err + out, time.monotonic() - t0


def test_ctrl_c_stops_a_run_with_a_whole_checkpoint_and_the_resume_command(tmp_path):
    out = tmp_path / "run"
    proc, tag = spawn("orchestrator.run", "--config", SMOKE, "--out", str(out), "--num-cpus", "2", "--set",
                      "rounds=500", "--set", "ranks.max_rank=40")
    wait_for(lambda: (out / "checkpoint" / "state.json").is_file(), 240, proc)
    code, text, seconds = stop(proc, tag, signal.SIGINT)
    print(f"stopped in {seconds:.1f} s:\n{text[-1500:]}")
    assert code == 130 and "Traceback" not in text and "KeyboardInterrupt" not in text
    assert f"python -m orchestrator.run --resume {out}" in text and "interrupted (stopped by SIGINT)" in text
    assert tagged_processes(tag) == [] and seconds < 30
    _, info = load_checkpoint(out / "checkpoint")  # whole
    done = int(info["round"])
    assert done >= 1 and f"the last checkpoint (round {done})" in text
    # resumable: the printed command (one more round) finishes the run
    proc, tag = spawn("orchestrator.run", "--resume", str(out), "--num-cpus", "2", "--set", f"rounds={done + 1}")
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == done + 1 and any("ranks.max_rank=40" in w for w in summary["warnings"])
    assert "warning: ranks.max_rank=40" in stderr


def test_sigterm_stops_a_sweep_with_the_resume_command(tmp_path):
    from ray import tune

    out = tmp_path / "sweep"
    spec = tmp_path / "one_trial.yaml"
    spec.write_text(f"name: one\nbase_config: {REPO / SMOKE}\nbase: {{resources: {{num_workers: 1}}}}\n")
    proc, tag = spawn("sweeps.run", "--config", str(spec), "--out", str(out), "--num-cpus", "2", "--set",
                      "rounds=500", "--summary-every", "1000")
    wait_for(lambda: any((out / "trials").glob("*/checkpoint/state.json")), 240, proc)
    code, text, seconds = stop(proc, tag, signal.SIGTERM)
    print(f"stopped in {seconds:.1f} s:\n{text[-1500:]}")
    assert code == 130 and "Traceback" not in text and "stopped after" in text
    assert f"python -m sweeps.run --resume {out}" in text and "Tuner.restore" not in text
    assert tagged_processes(tag) == [] and seconds < 30
    for state in (out / "trials").glob("*/checkpoint/state.json"):
        load_checkpoint(state.parent)  # whole
    assert tune.Tuner.can_restore(str(out / "tune"))
