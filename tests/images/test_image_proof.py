"""The proof counts the host suite's passes from its JUnit report, not from its console output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from image_proof import junit_passed


def test_passes_are_counted_from_the_junit_report(tmp_path: Path) -> None:
    suite = tmp_path / "test_sample.py"
    suite.write_text(
        "import pytest\n"
        "def test_one(): pass\n"
        "def test_two(): pass\n"
        "def test_fails(): assert False\n"
        "@pytest.mark.skip(reason='not here')\n"
        "def test_skipped(): pass\n"
        "def test_errors(broken): pass\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError('set-up fails')\n"
    )
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={tmp_path}",
                    f"--junitxml={report}", str(suite)], cwd=tmp_path, capture_output=True, check=False)
    assert junit_passed(report) == 2
