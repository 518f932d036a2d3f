"""`pip install .`: the wheel holds the library, the app, train/ and the shipped checkpoints, and works outside the
repository (no PYTHONPATH): its `lm4lv` command lists the shipped checkpoints from where pip put them."""

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            ROOT,
            "-w",
            str(tmp_path / "wheel"),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    wheel = glob.glob(str(tmp_path / "wheel" / "lm4lv-*.whl"))[0]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", wheel], check=True, env=env)
    listed = subprocess.run(
        [str(venv / "bin" / "lm4lv"), "models"], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    ).stdout
    assert "lm4lv-smollm2" in listed and "[default]" in listed
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import lm4lv_core.checkpoint as c; print(c.DEFAULT_CHECKPOINT)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith(
        os.path.join("share", "lm4lv", "checkpoints", "lm4lv-smollm2")
    )
