"""Load test of the demo server: several concurrent gradio_client users on localhost.

    python -m bench.load_test [--clients 4] [--requests 3] [--port 7870] [--checkpoint DIR] [--json OUT]

Starts `app.py` in a subprocess on 127.0.0.1, waits for it, then each client sends `--requests` restorations of its
own image (a distinct synthetic photo) through `/restore`, polling the job status to record queue positions. Checks:
every request completes, each result belongs to its sender (the server echoes the SHA-256 of the file it received),
and the server's resident memory after the run stays within 10% of its level after the first request. Prints a
JSON summary; exits non-zero if a check fails. Only loopback traffic; bounded in count and time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the server did not come up within {timeout:.0f} s")


def make_image(folder: str, client: int, request: int) -> str:
    rng = np.random.default_rng(client * 1000 + request)
    base = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:96, 0:128]
    image = (base + 40 * np.sin(xx / (5 + client))[..., None] + rng.normal(0, 10, (96, 128, 3))).clip(0, 255)
    path = os.path.join(folder, f"client{client}_request{request}.png")
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def run_client(url: str, client: int, requests: int, folder: str, results: list, lock: threading.Lock) -> None:
    from gradio_client import Client, handle_file

    api = Client(url, verbose=False)
    for r in range(requests):
        path = make_image(folder, client, r)
        sent = hashlib.sha256(open(path, "rb").read()).hexdigest()
        began, positions = time.time(), []
        job = api.submit(handle_file(path), "denoise", None, False, api_name="/restore")
        while not job.done():
            status = job.status()
            if status.rank is not None:
                positions.append(status.rank)
            time.sleep(0.2)
        record = {
            "client": client,
            "request": r,
            "seconds": round(time.time() - began, 2),
            "max_queue_position": max(positions) if positions else 0,
        }
        try:
            restored, _, info = job.result()
            record.update(ok=os.path.isfile(restored), own_result=info.get("input_sha256") == sent)
        except Exception as exc:  # recorded, not raised: the summary reports it
            record.update(ok=False, own_result=False, error=str(exc))
        with lock:
            results.append(record)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=3, help="requests per client")
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--startup-timeout", type=float, default=300)
    p.add_argument("--json", default=None, help="also write the summary here")
    args = p.parse_args(argv)
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, os.path.join(REPO, "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tempfile.mkdtemp(prefix="lm4lv-load-")
    try:
        wait_until_up(url, server, args.startup_timeout)
        results, lock = [], threading.Lock()
        run_client(url, 99, 1, folder, results, lock)  # the first request: warms up, sets the memory baseline
        baseline = rss_mb(server.pid)
        began = time.time()
        threads = [
            threading.Thread(target=run_client, args=(url, c, args.requests, folder, results, lock))
            for c in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1800)
        wall = time.time() - began
        after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    load = [r for r in results if r["client"] != 99]
    summary = {
        "clients": args.clients,
        "requests": len(load),
        "completed": sum(r["ok"] for r in load),
        "own_results": sum(r["own_result"] for r in load),
        "wall_seconds": round(wall, 1),
        "mean_latency_seconds": round(float(np.mean([r["seconds"] for r in load])), 2) if load else None,
        "max_queue_position": max((r["max_queue_position"] for r in load), default=0),
        "rss_after_first_request_mb": round(baseline, 1),
        "rss_after_run_mb": round(after, 1),
        "rss_growth_percent": round(100 * (after - baseline) / baseline, 1),
        "errors": [r.get("error") for r in load if "error" in r],
    }
    summary["passed"] = (
        summary["completed"] == summary["requests"] == args.clients * args.requests
        and summary["own_results"] == summary["requests"]
        and summary["rss_growth_percent"] <= 10
    )
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "requests": results}, f, indent=2)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
