"""Every benchmark in one command; writes BENCHMARKS.md with the machine and the commit.

    python3 bench/run_all.py            # about 16 minutes on 2 cores; starts throwaway brokers on 127.0.0.1

Each figure comes with the baseline it is compared with, measured in the same run.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = [
    ("Engine in-process, rules, memory", "engine.py", []),
    ("Ingest on a real broker vs. the raw clients", "ingest.py", []),
    ("End-to-end alert latency on a real broker", "latency.py", []),
    ("Embedding scorer by backend vs. the memory-bandwidth bound", "scorer.py", []),
    ("Black-box attacks (ART) vs. fingerprints", "blackbox.py", []),
    ("White-box attacks (ART) vs. the input profile", "whitebox.py", []),
    ("Faults on a real broker: lost, duplicated, recovery", "faults.py", []),
]


def machine() -> str:
    memory = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    return (f"{platform.machine()}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; commit {commit.strip() or 'unknown'}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def section(title: str, script: str, seconds: float, lines: list[str]) -> str:
    """A BENCHMARKS.md section: the script's output as a code block, Markdown tables (lines starting
    with ``|``) as tables."""
    body = "\n".join(line if line.startswith("|") else f"    {line}" for line in lines)
    return f"## {title}\n\n`python3 bench/{script}` ({seconds:.0f} s)\n\n{body}\n"


def main() -> int:
    sections = [f"# advmon benchmarks\n\nMachine: {machine()}.\n\nProduced by `python3 bench/run_all.py`; "
                "each script can be run alone. Timings on shared VMs vary by a third from run to run.\n"]
    failed = 0
    for title, script, args in BENCHES:
        print(f"== {title} ({script})", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                                text=True, timeout=1800)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if result.returncode != 0:
            failed += 1
            lines.append(f"FAILED (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
        print("\n".join(lines), file=sys.stderr)
        sections.append(section(title, script, time.perf_counter() - started, lines))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
