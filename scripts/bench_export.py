"""PyTorch fp32 against its ONNX fp32 and int8 exports (`brew export`), side by side in one run.

The model: the quickstart's student (runs/bbc-T3) unless --run names another brew output. The script exports it
twice into a temp folder (fp32, and int8 per channel; or per tensor with --per-tensor), scores the three on the
run's test split with the task's own metric (the code `brew eval` uses), then times them in turns on the same rows
(at batch 1: ms per example, 20 rounds; at batch 32: examples/s, 5 rounds), each ONNX session with as many threads
as PyTorch uses. Ratios are medians of neighbouring timings. Prints a table; --json saves the figures.

    .venv/bin/python scripts/bench_export.py                       # after bash scripts/quickstart.sh
    .venv/bin/python scripts/bench_export.py --run runs/wnut16-T3 --json runs/bench-export.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "bbc-T3"), help="a brew output folder")
    ap.add_argument("--rows", type=int, default=None, help="score on the first N test rows (default: all)")
    ap.add_argument("--rounds", type=int, default=20, help="timing rounds at batch 1")
    ap.add_argument("--per-tensor", action="store_true", help="int8 scales per tensor, not per channel")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    import torch

    from brewcli.errors import BrewError
    from brewcli.evaluate import Timed, evaluate_model, load_model, paired_seconds, speedup, spread_pct
    from brewcli.export import export_run
    from brewcli.models.hf import load_tokenizer, size_on_disk
    from brewcli.runfolder import open_run, pick_split
    from brewcli.runtime import OnnxModel

    try:
        run = open_run(args.run)
    except BrewError as e:
        sys.exit(f"{e}\n(run bash scripts/quickstart.sh first, or pass --run)")
    task, names = run.task, run.names
    split, ds = pick_split(run)
    if args.rows:
        ds = ds.select(range(min(args.rows, len(ds))))
    tokenizer = load_tokenizer(str(run.folder), "checkpoint")
    encoded, collate = task.encode(ds, tokenizer, names), task.collate(tokenizer)
    with tempfile.TemporaryDirectory(prefix="brew-bench-export-") as tmp:
        exports = {}
        for precision in ("fp32", "int8"):
            out = Path(tmp) / precision
            manifest = export_run(str(run.folder), str(out), None if precision == "fp32" else "int8",
                                  per_tensor=args.per_tensor)
            exports[f"onnx-{precision}"] = (OnnxModel(out, manifest), out, manifest)
        models = {"pytorch": (load_model(run.folder, task), run.folder, None), **exports}
        rows = {}
        for name, (model, folder, manifest) in models.items():
            metrics, _ = evaluate_model(model, task, encoded, collate, 64, task.metric(names, ds))
            rows[name] = {**metrics, "size_bytes": size_on_disk(folder)}
            if manifest:
                rows[name].update({k: manifest[k] for k in ("max_difference", "relative_difference")
                                   if k in manifest})
        timed = {name: Timed(m, encoded, collate) for name, (m, _, _) in models.items()}
        latency = paired_seconds(timed, batch_size=1, rounds=args.rounds)
        batch = min(32, len(encoded))
        batched = paired_seconds(timed, batch_size=batch, rounds=5, warmup=1)
    main_metric = task.main_metric
    base = rows["pytorch"]
    for name, row in rows.items():
        ms = [1000 * s for s in latency[name]]
        row["latency_ms"] = round(sorted(ms)[len(ms) // 2], 2)
        row["latency_spread_pct"] = spread_pct(ms)
        row["throughput"] = round(sorted(batch / s for s in batched[name])[len(batched[name]) // 2], 1)
        row[f"{main_metric}_delta_points"] = round(100 * (row[main_metric] - base[main_metric]), 2)
        if name != "pytorch":
            row["speedup_batch1"] = speedup({"latency_ms": ms}, {"latency_ms": [1000 * s for s in latency["pytorch"]]})[
                "speedup"]
            row["speedup_batch32"] = round(row["throughput"] / base["throughput"], 2)
    print(f"{run.folder} on its {split} split ({len(ds)} rows), {torch.get_num_threads()} threads")
    print(f"{'':10} {main_metric:>10} {'delta pts':>9} {'size MB':>8} {'ms/ex b1':>9} {'x b1':>6} "
          f"{'ex/s b32':>9} {'x b32':>6} {'max diff':>9}")
    for name, row in rows.items():
        print(f"{name:10} {row[main_metric]:10.4f} {row[f'{main_metric}_delta_points']:+9.2f} "
              f"{row['size_bytes'] / 1e6:8.1f} {row['latency_ms']:9.2f} {row.get('speedup_batch1', 1.0):6.2f} "
              f"{row['throughput']:9.1f} {row.get('speedup_batch32', 1.0):6.2f} {row.get('max_difference', 0):9.3g}")
    spread = max(r["latency_spread_pct"] for r in rows.values())
    print(f"timings varied by up to {spread:.0f}% (interquartile range over the median)"
          + ("; the machine is busy: rerun for firm figures" if spread > 25 else ""))
    int8 = rows["onnx-int8"]
    print(f"target: int8 loses at most 0.5 points of {main_metric} ({int8[f'{main_metric}_delta_points']:+.2f}) and "
          f"runs at least 2x faster at batch 1 ({int8['speedup_batch1']}x): "
          + ("met" if int8[f"{main_metric}_delta_points"] >= -0.5 and int8["speedup_batch1"] >= 2 else "NOT met"))
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run.folder), "split": split, "rows": len(ds),
                                               "threads": torch.get_num_threads(), "models": rows}, indent=2))


if __name__ == "__main__":
    main()
