"""The fault tests on a real broker, with a minutes-long receiver outage, as a table of what was lost,
duplicated and how long recovery took.

    python3 bench/faults.py            # about 10 minutes on 2 cores; FAULTS_OUTAGE_S (default 180)

The same scenarios run in the test suite with a 45 s outage (``tests/streams/test_faults.py``); each
asserts that nothing was lost and no alert was delivered twice, so a row only appears if it held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        report = Path(work) / "faults.md"
        env = {**os.environ, "FAULTS_REPORT": str(report),
               "FAULTS_OUTAGE_S": os.environ.get("FAULTS_OUTAGE_S", "180")}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "tests/streams/test_faults.py"], cwd=ROOT, env=env, capture_output=True, text=True)
        if report.exists():
            print(report.read_text(), end="")
        if result.returncode != 0:
            print("\n".join(line[:300] for line in result.stdout.splitlines()
                            if line.startswith(("FAILED", "ERROR", "E  "))))
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
