"What the benchmark scripts share: the timing helper and the flags every one of them takes."
import argparse, time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent/'results'

def timed(f):
    "Call `f()`; return its result and the seconds it took."
    t0 = time.perf_counter(); r = f(); return r, time.perf_counter() - t0

def add_common_args(p:argparse.ArgumentParser) -> argparse.ArgumentParser:
    "Add `--threads` and `--out` to a benchmark's argument parser."
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: leave the default)')
    p.add_argument('--out', default=str(RESULTS), help='folder for the JSON result')
    return p
