"""Benchmark: how long `itercomp --help` (and each command's --help) takes, and whether it imports torch.

python bench/cli_help.py --repeats 3 --out bench/results/cli_help.json

The target is under 1.5 s: the CLI builds its parser from torch-free config modules and imports the heavy
libraries only inside the command that runs. Each line is the best of `--repeats` runs in a fresh process
(wall time, and the peak resident memory of that process).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

from itercomp.io import write_json

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ((), ("iterate",), ("pretrain",), ("finetune",), ("gallery", "generate"), ("annotate", "serve"))
TARGET_SECONDS = 1.5


def time_help(words: tuple[str, ...], repeats: int) -> dict:
    best, peak = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "itercomp.cli", *words, "--help"], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"itercomp {' '.join(words)} --help failed: {out.stderr[-500:]}")
        best = min(best, elapsed)
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
    return {"seconds": round(best, 3), "peak_rss_mb_so_far": peak}


def imports_torch() -> bool:
    code = "import sys, itercomp.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cli_help.json")
    args = parser.parse_args()
    results = {" ".join(("itercomp", *words, "--help")): time_help(words, args.repeats) for words in COMMANDS}
    for command, r in results.items():
        print(f"{command:40s} {r['seconds']:.2f} s")
    torch_loaded = imports_torch()
    worst = max(r["seconds"] for r in results.values())
    print(f"building the parser imports torch: {torch_loaded}; slowest {worst:.2f} s (target < {TARGET_SECONDS} s)")
    write_json(args.out, {"command": f"python bench/cli_help.py --repeats {args.repeats}", "help": results,
                          "parser_imports_torch": torch_loaded, "target_seconds": TARGET_SECONDS})  # fmt: skip


if __name__ == "__main__":
    main()
