"""The held-out evaluation spread over a Ray cluster: one task per shard, then the merge.

    pip install ray
    python3 examples/cluster/ray_evaluate.py --shards 4 [--address auto] [-- extra evaluate options]

Each task runs `noisear-gpu evaluate --compare ... --shard i/n --save` on whatever node Ray
places it (the binary and the shipped models must be at the same path there, or set --bin);
the driver then runs `evaluate --merge` on the saved shards, which refuses an incomplete or
mixed set. Without --address a local Ray instance is started (ray.init()).
"""
import argparse
import os
import subprocess
import sys

import ray


@ray.remote(num_cpus=1)
def evaluate_shard(binary: str, i: int, n: int, out: str, extra: list) -> str:
    path = os.path.join(out, f"shard-{i}-of-{n}.json")
    cmd = [binary, "evaluate", "--shard", f"{i}/{n}", "--save", path, "--quiet"] + extra
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"shard {i}/{n}: {done.stderr.strip()}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--bin", default=os.path.abspath(".build/release/noisear-gpu"))
    ap.add_argument("--out", default=os.path.abspath("eval-ray"))
    ap.add_argument("--compare", default="gaussian,noisear")
    ap.add_argument("--address", default=None, help="a running cluster (e.g. auto); default: start a local one")
    ap.add_argument("extra", nargs="*", help="more evaluate options, after --")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    extra = ["--compare", args.compare] + args.extra
    paths = ray.get([evaluate_shard.remote(args.bin, i, args.shards, args.out, extra) for i in range(args.shards)])
    print("\n".join(f"saved {p}" for p in paths), flush=True)
    sys.exit(subprocess.run([args.bin, "evaluate", "--merge", ",".join(paths)]).returncode)


if __name__ == "__main__":
    main()
