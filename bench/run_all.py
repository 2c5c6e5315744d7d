"""Every benchmark in one command; writes BENCHMARKS.md with the machine and the commit.

    python3 bench/run_all.py                 # about 30 minutes on 2 cores; starts throwaway brokers on 127.0.0.1
    python3 bench/run_all.py engine scorer   # re-run those two; their sections of BENCHMARKS.md are replaced

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
    ("Detection on scenario families advmon's demo did not generate", "detection.py", ["--draws", "5"]),
    ("Engine in-process, rules, memory", "engine.py", []),
    # the broker on a core of its own, as on its own machine (on two cores it otherwise takes the CPU that the
    # overlap of a batch's transaction with the next batch would use)
    ("Ingest on a real broker vs. the raw clients", "ingest.py", ["--broker-core", "1"] if (os.cpu_count() or 1) > 1
     else []),
    ("The faust alerter on a real broker: sustainable rate", "alerter.py", ["--sharded", "3", "2"]),
    ("Replay vs. the daemons with 1, 2 and 3 ingest workers", "order.py", ["--alerter-partitions", "1", "3"]),
    ("The query index sharded by hash, in process: a two-round reduce", "sharding.py", []),
    ("The sharded matcher's daemons on a real broker", "match_daemons.py", ["--hours", "2"]),
    ("The sharded alerter in process: each partition's time", "alerter_state.py",
     ["--throughput", "--clients", "100000", "--minutes", "6", "--partitions", "5"]),
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


def section(title: str, command: str, seconds: float, lines: list[str]) -> str:
    """A BENCHMARKS.md section: the script's output as a code block, Markdown tables (lines starting
    with ``|``) as tables."""
    body = "\n".join(line if line.startswith("|") else f"    {line}" for line in lines)
    return f"## {title}\n\n`python3 bench/{command}` ({seconds:.0f} s)\n\n{body}\n"


def run(title: str, script: str, args: list[str]) -> tuple[str, bool]:
    """One benchmark's section, and whether it succeeded."""
    print(f"== {title} ({script})", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=1800)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0:
        lines.append(f"FAILED (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
    print("\n".join(lines), file=sys.stderr)
    return section(title, " ".join([script, *args]), time.perf_counter() - started, lines), result.returncode == 0


def rerun(only: list[str]) -> int:
    """Re-run some benchmarks and replace their sections of BENCHMARKS.md, each marked with the machine and
    commit of its own run (the rest keep theirs)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    failed = 0
    for title, script, args in BENCHES:
        if script not in only:
            continue
        body, ok = run(title, script, args)
        failed += not ok
        body = body.replace("\n\n", f"\n\nRe-run alone on {machine()}.\n\n", 1)
        head = f"## {title}\n"
        if head not in text:  # a benchmark new to the file: its place in BENCHES order
            later = [text.index(f"## {t}\n") for t, _, _ in BENCHES[[t for t, _, _ in BENCHES].index(title) + 1:]
                     if f"## {t}\n" in text]
            at = min(later, default=len(text))
            text = text[:at] + head + "\n" + text[at:]
        begin = text.index(head)
        end = text.find("\n## ", begin + len(head))
        text = text[:begin] + body + (text[end + 1:] if end >= 0 else "")
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    only = [name if name.endswith(".py") else f"{name}.py" for name in sys.argv[1:]]
    unknown = sorted(set(only) - {script for _, script, _ in BENCHES})
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if only:
        return rerun(only)
    sections = [f"# advmon benchmarks\n\nMachine: {machine()}.\n\nProduced by `python3 bench/run_all.py`; "
                "each script can be run alone (`python3 bench/run_all.py engine scorer` re-runs those two and "
                "replaces their sections). Timings on shared VMs vary by a third from run to run.\n"]
    failed = 0
    for title, script, args in BENCHES:
        body, ok = run(title, script, args)
        sections.append(body)
        failed += not ok
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
