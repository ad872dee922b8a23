"""Analytic speed benchmark (issue 15 targets), written as Markdown.

    .venv/bin/python benchmarks/analytic_bench.py [--out benchmarks/results/analytic.md] [--pairs 3]
                                                  [--before REV] [--skip-grids]

Every case is a fresh process, timed from its start to its exit (wall clock, as a user waits), its
peak resident memory read from the kernel for that child alone (os.wait4). With --before REV, each
of our cases also runs on a checkout of REV (a git worktree, on PYTHONPATH) right beside this tree's,
so before and after are measured on the same machine in the same run. Cases:
- plain: FlopCounterMode under FakeTensorMode counting one training step (forward, cross-entropy,
  backward) of the 55B variant at 8192 tokens, as a user would write it: torch and x-transformers
  only, the model built from the same TransformerWrapper/Decoder keyword arguments ours builds.
- ours 55B: `orca-analysis inspect` of that variant (`--set`s on the default study) with
  `--only params,flops,memory`: parameters, FLOPs (forward and training step, dense and causal, by
  component) and the simulated memory (training step, prefill, decode) at 8192 tokens.
  The two alternate, pair by pair, so the machine's load falls on both alike; the ratio is of medians.
- inspect: the default Orca `inspect` at 8192 tokens (the study's measurement list), beside the floor
  every such process pays: `python -c "import torch, x_transformers"`.
- grids: `orca-analysis run` of a 27-variant (3 x 3 x 3) and a 125-variant (5 x 5 x 5) grid with
  params, flops and memory at 2048 tokens, cold (an empty store).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orca_analysis"]
B55 = {
    "dim": 8192,
    "depth": 80,
    "heads": 64,
    "attn_dim_head": 128,
    "attn_kv_heads": 8,
    "attn_one_kv_head": False,
    "alibi_num_heads": 32,
}
SETS = [a for k, v in B55.items() for a in ("--set", f"{k}={str(v).lower()}")]
PLAIN = """
import json, sys
import torch, torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode
from x_transformers import Decoder, TransformerWrapper
wrapper, layers, n = json.loads(sys.argv[1])
with FakeTensorMode():
    model = TransformerWrapper(**wrapper, attn_layers=Decoder(**layers))
    tokens = torch.randint(0, wrapper["num_tokens"], (1, n))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(tokens).transpose(1, 2), tokens).backward()
print(counter.get_total_flops())
"""
GRID = """name: {name}
base:
  num_tokens: 20000
  max_seq_len: 8192
  use_abs_pos_emb: false
  attn_layers: {{dim: 512, depth: 6, heads: 8, alibi_pos_bias: true, alibi_num_heads: 4, rotary_xpos: true,
                attn_flash: true, deepnorm: true, shift_tokens: 1, attn_one_kv_head: true}}
sweep:
  mode: grid
  axes: {{dim: {dim}, depth: {depth}, heads: {heads}}}
workloads: {{seq_lens: [2048], batch_sizes: [1], dtype: float32}}
measurements: [params, flops, memory]
"""
GRIDS = {
    "grid27": ([256, 512, 1024], [3, 6, 12], [4, 8, 16]),
    "grid125": ([128, 256, 384, 512, 768], [2, 4, 6, 8, 12], [4, 8, 12, 16, 32]),
}
# When the issue was filed (commit b400b96, on the machine of that session; not comparable across machines)
FILED = {"ours_55b": 33.5, "orca_inspect": 9.3, "grid27": 136.8}
TREES: dict[str, Path] = {"after": ROOT}  # case -> the source tree it runs (--before adds "before")


def timed(cmd: list[str], tree: Path = ROOT) -> tuple[float, float, str]:
    """(wall s, peak RSS GiB, stdout) of one fresh child process, importing orca_analysis from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}): {err.strip()[-400:]}")
    return wall, usage.ru_maxrss / 2**20, out  # ru_maxrss is in KiB on Linux


def plain_args() -> str:
    from orca_analysis.build.builder import library_kwargs
    from orca_analysis.study import load_study

    cfg = load_study("orca", [f"{k}={str(v).lower()}" for k, v in B55.items()], base_only=True).base
    wrapper, layers = library_kwargs(cfg)
    return json.dumps([wrapper, layers, 8192])


def _ours_55b(out: str, plain_total: int) -> str:
    f = json.loads(out)["flops"]
    seen = f["flop_counter_mode_plain"]["train_step_dense"]  # ours, of the plain counter
    return (
        f"train_step_causal {f['totals']['train_step_causal']['counter']:.4e}; its plain "
        f"FlopCounterMode figure {seen:,} ({'equal to' if seen == plain_total else 'NOT'} plain's)"
    )


def ratio_rows(pairs: int) -> tuple[list[str], dict]:
    arg, rows = plain_args(), []
    cases = {
        "plain": [sys.executable, "-c", PLAIN, arg],
        **{
            k: [*CLI, "inspect", *SETS, "--seq-len", "8192", "--only", "params,flops,memory", "--json"]
            for k in TREES
        },
    }
    walls, rss, plain_total = {k: [] for k in cases}, dict.fromkeys(cases, 0.0), 0
    for i in range(pairs):
        for case, cmd in cases.items():
            wall, peak, out = timed(cmd, TREES.get(case, ROOT))
            walls[case].append(wall)
            rss[case] = max(rss[case], peak)
            if case == "plain":
                plain_total = int(out)
                result = f"{plain_total:,} FLOP (FlopCounterMode's total)"
            else:
                result = _ours_55b(out, plain_total)
            rows.append(
                f"| {i + 1} | {case} | {wall:.2f} | {peak:.2f} | {os.getloadavg()[0]:.1f} | {result} |"
            )
    med = {k: statistics.median(v) for k, v in walls.items()}
    return rows, {
        "median": med,
        "rss": rss,
        "pair_ratios": [o / p for o, p in zip(walls["after"], walls["plain"], strict=True)],
    }


def inspect_rows(runs: int) -> tuple[list[str], dict]:
    cases = {
        "floor": [sys.executable, "-c", "import torch, x_transformers"],
        **{k: [*CLI, "inspect", "--seq-len", "8192"] for k in TREES},
    }
    rows, walls = [], {k: [] for k in cases}
    for i in range(runs):
        for case, cmd in cases.items():
            wall, peak, _ = timed(cmd, TREES.get(case, ROOT))
            walls[case].append(wall)
            rows.append(f"| {i + 1} | {case} | {wall:.2f} | {peak:.2f} | {os.getloadavg()[0]:.1f} |")
    return rows, {k: statistics.median(v) for k, v in walls.items()}


def grid_rows() -> tuple[list[str], dict]:
    rows, out = [], {}
    for name, (dim, depth, heads) in GRIDS.items():
        n = len(dim) * len(depth) * len(heads)
        for case, tree in TREES.items():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{name}.yaml"
                path.write_text(GRID.format(name=name, dim=dim, depth=depth, heads=heads))
                wall, peak, _ = timed([*CLI, "run", str(path), "--out", str(Path(tmp) / "reports")], tree)
            out[name, case] = wall
            rows.append(
                f"| {name} | {case} | {n} | {wall:.1f} | {wall / n:.2f} | {peak:.2f} | {os.getloadavg()[0]:.1f} |"
            )
    return rows, out


def _worktree(rev: str) -> Path:
    """A checkout of `rev` beside this tree (removed at exit)."""
    import atexit

    path = Path(tempfile.mkdtemp(prefix="before-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True
    )
    atexit.register(lambda: subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT))
    return path


def _vs(g: dict, case: str, key: str = "before") -> str:
    return f"; before {g[key]:.2f} s ({g[case] / g[key]:.2f}x)" if key in g else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/analytic.md"))
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--before", metavar="REV", help="also run our cases on this commit, side by side")
    ap.add_argument("--skip-grids", action="store_true")
    args = ap.parse_args()
    if args.before:
        TREES["before"] = _worktree(args.before)
    ratio, r = ratio_rows(args.pairs)
    insp, i = inspect_rows(args.pairs)
    grids, g = ([], {}) if args.skip_grids else grid_rows()
    med, head = (
        r["median"],
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    )
    before = f"before = commit {args.before}, " if args.before else ""
    text = [
        "# Analytic speed benchmark",
        "",
        f"Date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"torch {version('torch')}, x-transformers {version('x-transformers')}, Python {platform.python_version()}. "
        f"Produced by `benchmarks/analytic_bench.py`; {before}after = the working tree on commit {head}, run side "
        "by side. Every figure is a fresh process from start to exit (wall seconds, imports included) with its "
        "own peak RSS; load is the 1-minute load average after it.",
        "",
        "## The 55B variant at 8192 tokens: our complete analysis against plain FlopCounterMode",
        "",
        "d 8192, 80 layers, 64 heads of 128, 8 KV heads (ALiBi on 32), the default study's other flags. "
        "plain: FlopCounterMode under FakeTensorMode, one training step, FLOPs alone. ours: `orca-analysis "
        "inspect --set ... --only params,flops,memory --json` (parameters, FLOPs by component and by method, "
        "simulated training/prefill/decode memory by category), per block and exact.",
        "",
        "| pair | case | wall s | peak RSS GiB | load | result |",
        "|---|---|---|---|---|---|",
        *ratio,
        "",
        f"- Median wall: ours {med['after']:.2f} s, plain {med['plain']:.2f} s: ratio **{med['after'] / med['plain']:.2f}** "
        f"(target at most 1.0); pair by pair {', '.join(f'{x:.2f}' for x in r['pair_ratios'])}"
        + (
            f". Before: {med['before']:.2f} s, ratio {med['before'] / med['plain']:.2f}."
            if "before" in med
            else "."
        )
        + f" When the issue was filed: {FILED['ours_55b']:.1f} s (another machine).",
        f"- Peak RSS: ours {r['rss']['after']:.2f} GiB, plain {r['rss']['plain']:.2f} GiB (target under 1 GiB).",
        "",
        "## Default Orca inspect at 8192 tokens",
        "",
        "| run | case | wall s | peak RSS GiB | load |",
        "|---|---|---|---|---|",
        *insp,
        "",
        f"- Median: inspect {i['after']:.2f} s (target under 3 s){_vs(i, 'after')}; the floor of importing torch "
        f"and x-transformers alone is {i['floor']:.2f} s, so {i['after'] - i['floor']:.2f} s is the analysis itself"
        + (f" (before: {i['before'] - i['floor']:.2f} s)." if "before" in i else ".")
        + f" When the issue was filed: {FILED['orca_inspect']:.1f} s (another machine).",
    ]
    if grids:
        after = {k: g[k, "after"] for k in GRIDS}
        text += [
            "",
            "## Analytic grids at 2048 tokens, cold",
            "",
            "| grid | case | variants | wall s | s per variant | peak RSS GiB (the run's process; workers not counted) | load |",
            "|---|---|---|---|---|---|---|",
            *grids,
            "",
            f"- 27 variants: {after['grid27']:.1f} s (target at most 15 s)"
            + (
                f"; before {g['grid27', 'before']:.1f} s, {after['grid27'] / g['grid27', 'before']:.2f}x"
                if ("grid27", "before") in g
                else ""
            )
            + f". When the issue was filed: {FILED['grid27']:.1f} s (another machine).",
            f"- 125 variants: {after['grid125']:.1f} s (target at most 60 s)"
            + (
                f"; before {g['grid125', 'before']:.1f} s, {after['grid125'] / g['grid125', 'before']:.2f}x."
                if ("grid125", "before") in g
                else "."
            ),
        ]
    Path(args.out).write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
