"""`server-responder submit --follow` against a real responder: output printed as it arrives."""

from __future__ import annotations

import subprocess
import sys


def test_follow_prints_output_while_the_job_runs_and_exits_with_its_status(responder, tmp_path):
    gate = tmp_path / "gate"
    script = tmp_path / "job.py"
    script.write_text(f"import os, sys, time\nprint('first', flush=True)\n"
                      f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.02)\n"
                      "print('second')\nprint('warned', file=sys.stderr)\nsys.exit(3)\n")
    follower = subprocess.Popen([sys.executable, "-m", "server_responder", "submit", "--url", responder.url,
                                 "--script", str(script), "--follow"],
                                env=responder.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Printed while the job still waits for the gate, which only opens once the line is here.
        assert follower.stdout.readline() == "first\n"
        gate.touch()
        rest, errors = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 3
    assert rest == "second\n"
    assert "warned\n" in errors


def test_follow_of_a_quick_job_prints_all_of_it_once(responder, tmp_path):
    done = subprocess.run([sys.executable, "-m", "server_responder", "submit", "--url", responder.url,
                           "--script", "-", "--follow"], input="print('a')\nprint('b')\n", env=responder.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\nb\n"
