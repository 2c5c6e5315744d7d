"""The package as a user installs it: a wheel built with ``pip wheel .`` in a fresh virtual environment runs
``advmon demo`` on its shipped rules, away from the source checkout."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_wheel_installed_in_a_fresh_venv_runs_the_demo(tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("advmon-*.whl")
    # The dependencies come from this interpreter's site-packages (no download); advmon itself only from the wheel.
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    installed = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    away = tmp_path / "elsewhere"
    away.mkdir()
    where = subprocess.run([str(bin_dir / "python"), "-c", "import monitor; print(monitor.__file__)"], cwd=away,
                           capture_output=True, text=True, timeout=60)
    assert str(tmp_path / "venv") in where.stdout, where.stdout + where.stderr
    demo = subprocess.run([str(bin_dir / "advmon"), "demo", "--duration", "20m", "--metrics-port", "0",
                           "--no-progress"], cwd=away, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert "advmon demo:" in demo.stdout and "attack" in demo.stdout
    version = subprocess.run([str(bin_dir / "advmon"), "--version"], cwd=away, capture_output=True, text=True)
    assert version.stdout.strip().startswith("advmon ")
