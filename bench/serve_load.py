"""Serving under load: honed serve vs `transformers serve`, same model, same requests, one run.

Each server runs in its own process on loopback with the embedded SmolLM2-135M-Instruct (fp32, CPU). A load
generator (the official `openai` client, one thread per simulated user) sends chat completions built from
honed's demo prompts, greedy, a fixed max_tokens, at 1, 4 and 16 concurrent clients. Each level is bounded
in count (`--requests-per-client` per client) and in time (`--level-timeout-s`: clients stop sending after
it; what finished counts). Reported per level: requests/s, p50/p95 latency (send to last byte), generated
tokens/s, and errors.

    python bench/serve_load.py --quick                # 1, 4, 16 clients; honed only
    python bench/serve_load.py --peer transformers    # the same load on `transformers serve` too

The last line is `ratio_rps_16=<honed requests/s / peer requests/s at 16 clients>` when a peer ran.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--level-timeout-s", type=float, default=180.0)
    parser.add_argument("--peer", choices=["none", "transformers"], default="none")
    parser.add_argument(
        "--peer-continuous-batching",
        action="store_true",
        help="Start `transformers serve` with --continuous-batching (paged attention).",
    )
    parser.add_argument("--quick", action="store_true", help="2 requests per client")
    parser.add_argument("--out", help="Write the results as JSON here.")
    args = parser.parse_args()
    if args.quick:
        args.requests_per_client = 2

    prompts = _prompts()
    results = {"honed": _measure("honed", prompts, args)}
    if args.peer == "transformers":
        results["transformers"] = _measure("transformers", prompts, args)
    _print(results, args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def _prompts() -> list[str]:
    from honed.demo.data import demo_recipe_dict, write_demo_data

    folder = Path(tempfile.mkdtemp(prefix="honed-bench-"))
    write_demo_data(folder, n_train=10, n_validation=64)
    recipe = demo_recipe_dict(folder)
    rows = [json.loads(line) for line in Path(recipe["data"]["validation"]).read_text().splitlines()]
    return [recipe["data"]["prompt_template"].format(**row) for row in rows]


def _measure(tool: str, prompts: list[str], args) -> dict:
    port = _free_port()
    command, model = _server_command(tool, port, args.peer_continuous_batching)
    log = Path(tempfile.mkdtemp(prefix=f"bench-{tool}-")) / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(port, server, log)
        _warm_up(port, model, prompts[0], args.max_tokens)
        return {str(c): _level(port, model, prompts, c, args) for c in args.concurrency}
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(log.parent, ignore_errors=True)


def _server_command(tool: str, port: int, continuous: bool) -> tuple[list[str], str]:
    from honed.models.load import EMBEDDED, resolve_base

    if tool == "honed":
        store = Path(tempfile.mkdtemp(prefix="bench-store-")) / "feedback.db"
        serve = [str(BIN / "honed"), "-q", "serve", EMBEDDED, "--port", str(port), "--store", str(store)]
        return [*serve, "--max-batch-size", "16", "--max-queue", "256"], EMBEDDED
    folder = str(resolve_base(EMBEDDED).folder)
    command = [str(BIN / "transformers"), "serve", folder, "--port", str(port), "--device", "cpu"]
    command += ["--dtype", "float32"] + (["--continuous-batching"] if continuous else [])
    return command, folder


def _level(port: int, model: str, prompts: list[str], clients: int, args) -> dict:
    from openai import OpenAI

    latencies: list[float] = []
    tokens, errors = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + args.level_timeout_s

    def user(index: int) -> None:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=600)
        for k in range(args.requests_per_client):
            if time.monotonic() > deadline:
                return
            prompt = prompts[(index * args.requests_per_client + k) % len(prompts)]
            sent = time.monotonic()
            try:
                reply = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    max_tokens=args.max_tokens,
                    temperature=0,
                )
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(time.monotonic() - sent)
                tokens[0] += reply.usage.completion_tokens if reply.usage else 0

    start = time.monotonic()
    threads = [threading.Thread(target=user, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    return _summary(latencies, tokens[0], errors[0], wall)


def _summary(latencies: list[float], tokens: int, errors: int, wall: float) -> dict:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else None
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(statistics.median(ordered), 2) if ordered else None,
        "p95_s": round(p95, 2) if p95 is not None else None,
        "tokens_per_s": round(tokens / wall, 1),
    }


def _warm_up(port: int, model: str, prompt: str, max_tokens: int) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=600)
    messages = [{"role": "user", "content": prompt}]
    client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)


def _wait_ready(port: int, server: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not answer /health in {timeout_s:g} s:\n{log.read_text()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _print(results: dict, args) -> None:
    print(f"\nmax_tokens={args.max_tokens}, requests_per_client={args.requests_per_client}, greedy\n")
    print("| server | clients | requests | errors | requests/s | p50 s | p95 s | generated tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for tool, levels in results.items():
        for clients, row in levels.items():
            print(
                f"| {tool} | {clients} | {row['requests']} | {row['errors']} | {row['requests_per_s']} | "
                f"{row['p50_s']} | {row['p95_s']} | {row['tokens_per_s']} |"
            )
    if "transformers" in results:
        for clients in results["honed"]:
            peer = results["transformers"][clients]["requests_per_s"]
            ratio = results["honed"][clients]["requests_per_s"] / peer if peer else float("inf")
            print(f"ratio_rps_{clients}={ratio:.2f}")


if __name__ == "__main__":
    main()
