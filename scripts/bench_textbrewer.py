"""brew against TextBrewer 0.2.1 on the quickstart's distillation job, side by side in one run.

The job: the fine-tuned BBC teacher (runs/bbc-teacher, from the quickstart), a T3 student from teacher layers
1, 3, 5 (both systems start from the same copied weights), KD (ce, T=8) plus hidden_mse 0->0, 2->1, 4->2, 6->3,
batch 32, max length 128, lr 1e-4 (linear, 10% warmup), AdamW with weight decay 0.01, one checkpoint an epoch.
Systems:

  textbrewer  TextBrewer's GeneralDistiller; batches padded to max_length, as its examples do
  brew-live   brew with the teacher run live (teacher_cache: off)
  brew-cold   brew with an empty teacher cache: one teacher pass fills it, then the epochs
  brew-warm   brew reading the cache brew-cold filled

on two datasets: `bbc` (the BBC News articles, nearly all longer than 128 tokens) and `short` (the same
articles' titles, median under 16 tokens; brew groups them by length, TextBrewer pads them to 128). Each
system runs in its own process (so peak memory is its own), in alternating order when --rounds > 1; the
time covers loading the models, any cache fill and training, not the final scoring. Each student is then
scored on the test split by the same code.

    bash scripts/bench_textbrewer.sh            # installs TextBrewer into .bench-lib (never into .venv), runs this
    python scripts/bench_textbrewer.py --epochs 2 --rounds 2 --json runs/bench.json

TextBrewer is imported only by its worker, from .bench-lib; without it the textbrewer rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("textbrewer", "brew-live", "brew-cold", "brew-warm")
MATCHES = ((0, 0), (2, 1), (4, 2), (6, 3))


# ---------------------------------------------------------------------------------------------- workers


def recipe(args, system: str, work: Path) -> dict:
    return {
        "name": f"bench-{system}",
        "task": "classification",
        "teacher": str(Path(args.teacher).absolute()),  # a recipe's paths are relative to its folder, work/
        "student": {"preset": "T3", "init": "teacher-layers", "teacher_layers": [1, 3, 5]},
        "data": {"files": {s: str(Path(args.data).absolute() / f"{s}.jsonl") for s in ("train", "test")},
                 "max_length": args.max_length, "max_train_samples": args.max_train_samples},
        "distill": {"temperature": 8, "kd_loss": "ce", "kd_weight": 1.0,
                    "matches": [{"teacher_layer": t, "student_layer": s, "feature": "hidden", "loss": "hidden_mse"}
                                for t, s in MATCHES],
                    "teacher_cache": "off" if system in ("brew-live", "textbrewer") else "disk",
                    "cache_dir": str(work / "cache")},
        "train": {"output_dir": str(work / f"out-{system}"), "epochs": args.epochs, "batch_size": args.batch_size,
                  "lr": 1e-4, "warmup": 0.1, "weight_decay": 0.01, "max_grad_norm": 1.0, "seed": 42,
                  "log_every": 1000, "group_by_length": args.group_by_length, "precision": args.precision,
                  "keep_best": None, "keep_checkpoints": 1},
    }


def plan_of(args, system: str, work: Path):
    import yaml

    from brewcli.plan import build_plan
    from brewcli.recipe import load_recipe

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{system}.yaml"
    path.write_text(yaml.safe_dump(recipe(args, system, work), sort_keys=False))
    return build_plan(load_recipe(path))


def score(plan, model) -> float:
    from brewcli.evaluate import evaluate_model

    task = plan.task
    metrics, _ = evaluate_model(model, task, plan.encoded["test"], task.collate(plan.tokenizer), 64,
                                task.metric(plan.splits.label_names, plan.splits.test))
    return metrics["accuracy"]


def run_brew(args, system: str, work: Path) -> dict:
    import accelerate  # noqa: F401  imported before the clock starts, as TextBrewer's worker imports its own
    import torch.utils.tensorboard  # noqa: F401

    from brewcli.train import build_job, fit

    plan = plan_of(args, system, work)
    if system == "brew-warm" and (plan.cache is None or not plan.cache.hit):
        raise SystemExit("brew-warm needs the cache brew-cold fills; run brew-cold first")
    shutil.rmtree(plan.recipe.train.output_dir, ignore_errors=True)
    start = time.perf_counter()
    job = build_job(plan)
    fit(job)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(plan.encoded["train"]) * args.epochs,
            "accuracy": score(plan, job.plain_student), "device": job.acc.device.type}


def run_textbrewer(args, system: str, work: Path) -> dict:
    import torch
    from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    from brewcli.train import build_models

    plan = plan_of(args, system, work)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, train = plan.tokenizer, plan.encoded["train"].remove_columns(["example"])
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids", "labels") if k in train.column_names]

    def collate(rows):  # TextBrewer's examples pad every batch to max_length
        inputs = tokenizer.pad({k: [r[k] for r in rows] for k in keys if k != "labels"}, padding="max_length",
                               max_length=args.max_length, return_tensors="pt")
        return {**inputs, "labels": torch.tensor([r["labels"] for r in rows])}

    start = time.perf_counter()
    teachers, student = build_models(plan)
    teacher = teachers["teacher"]
    teacher, student = teacher.to(device), student.to(device)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(42))
    decay = [p for p in student.parameters() if p.ndim >= 2]
    rest = [p for p in student.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-4)
    steps = len(loader) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)

    def adaptor(batch, outputs):
        return {"logits": outputs.logits, "hidden": outputs.hidden_states, "inputs_mask": batch["attention_mask"]}

    out = work / "out-textbrewer"
    train_config = TrainingConfig(device=device, output_dir=str(out), log_dir=str(out / "logs"), ckpt_frequency=1)
    distill_config = DistillationConfig(
        temperature=8, kd_loss_type="ce", kd_loss_weight=1, hard_label_weight=0,
        intermediate_matches=[{"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 1}
                              for t, s in MATCHES])
    distiller = GeneralDistiller(train_config, distill_config, teacher, student, adaptor, adaptor)
    amp = (torch.autocast(device, dtype=torch.bfloat16) if args.precision == "bf16"
           else torch.autocast(device, enabled=False))
    with distiller, amp:
        distiller.train(optimizer, loader, num_epochs=args.epochs, scheduler=scheduler, max_grad_norm=1.0,
                        output_hidden_states=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": len(train) * args.epochs, "accuracy": score(plan, student), "device": device}


def worker(args) -> None:
    import logging

    logging.disable(logging.INFO)
    work = Path(args.work)
    result = (run_textbrewer if args.worker == "textbrewer" else run_brew)(args, args.worker, work)
    import torch

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print("RESULT " + json.dumps({**result, "samples_per_s": result["rows"] / result["seconds"], "peak_rss_mib": peak,
                                  "peak_gpu_mib": gpu}), flush=True)


# ---------------------------------------------------------------------------------------------- the parent


def short_titles(src: Path, dst: Path) -> Path:
    """The `short` dataset: each BBC article's title (the `title` column prepare_bbc.py writes) with its topic."""
    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(src / f"{split}.jsonl") as f, open(dst / f"{split}.jsonl", "w") as out:
            for line in f:
                row = json.loads(line)
                if "title" not in row:
                    raise SystemExit(f"{src / split}.jsonl has no title column: run scripts/prepare_bbc.py again")
                out.write(json.dumps({"text": row["title"], "label": row["label"]}) + "\n")
    return dst


def has_textbrewer() -> bool:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / ".bench-lib"),
                                                                     os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", "import textbrewer"], env=env, capture_output=True).returncode == 0


def run_one(args, system: str, data: Path, work: Path, group: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--work", str(work), "--teacher", args.teacher,
           "--data", str(data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--precision", args.precision]
    if args.max_train_samples:
        cmd += ["--max-train-samples", str(args.max_train_samples)]
    if group and system != "textbrewer":
        cmd.append("--group-by-length")
    if system == "brew-cold":
        shutil.rmtree(work / "cache", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / ".bench-lib"), str(ROOT),
                                                                     os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{system} on {data.name} failed (exit {done.returncode})")
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default="runs/bbc-teacher")
    p.add_argument("--data", default="data/bbc", help="a folder with train.jsonl and test.jsonl (text, label)")
    p.add_argument("--datasets", default="bbc,short")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--rounds", type=int, default=1, help="repeat, alternating the order of the systems")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--group-by-length", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    os.chdir(ROOT)
    if not Path(args.teacher, "config.json").is_file():
        raise SystemExit(f"no teacher at {args.teacher}: run `bash scripts/quickstart.sh` (or brew train "
                         "recipes/bbc/teacher.yaml) first")
    systems = [s for s in args.systems.split(",") if s]
    if "textbrewer" in systems and not has_textbrewer():
        print("TextBrewer is not installed in .bench-lib (bash scripts/bench_textbrewer.sh installs it); "
              "skipping it", file=sys.stderr)
        systems.remove("textbrewer")
    work = Path(tempfile.mkdtemp(prefix="brew-bench-"))
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        for name in args.datasets.split(","):
            data = Path(args.data) if name == "bbc" else short_titles(Path(args.data), work / "short-data")
            results[name] = {s: [] for s in systems}
            for r in range(args.rounds):
                order = list(systems if r % 2 == 0 else systems[::-1])
                if {"brew-cold", "brew-warm"} <= set(order):  # warm reads what cold filled in the same round
                    i, j = order.index("brew-cold"), order.index("brew-warm")
                    order[min(i, j)], order[max(i, j)] = "brew-cold", "brew-warm"
                for system in order:
                    res = run_one(args, system, data, work / name, group=name == "short")
                    results[name][system].append(res)
                    print(f"{name:5s} round {r + 1} {system:10s} {res['samples_per_s']:8.1f} samples/s  "
                          f"{res['seconds']:7.1f} s  accuracy {res['accuracy']:.4f}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def report(results: dict, args) -> None:
    summary = {"epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length,
               "precision": args.precision, "datasets": {}}
    for name, by_system in results.items():
        rows = {}
        for system, runs in by_system.items():
            best = max(r["samples_per_s"] for r in runs)  # the best of the rounds: the least disturbed run
            rows[system] = {"samples_per_s": round(best, 1), "accuracy": round(runs[-1]["accuracy"], 4),
                            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs)),
                            "peak_gpu_mib": runs[-1]["peak_gpu_mib"], "device": runs[-1]["device"]}
        base = rows.get("textbrewer", {}).get("samples_per_s")
        for row in rows.values():
            row["vs_textbrewer"] = round(row["samples_per_s"] / base, 2) if base else None
        summary["datasets"][name] = rows
        print(f"\n{name}: {args.epochs:g} epoch(s), batch {args.batch_size}, max_length {args.max_length}, "
              f"{args.precision}")
        print(f"{'system':12s} {'samples/s':>10s} {'x TextBrewer':>13s} {'peak RSS MiB':>13s} {'test accuracy':>14s}")
        for system, row in rows.items():
            ratio = f"{row['vs_textbrewer']:.2f}x" if row["vs_textbrewer"] else "-"
            print(f"{system:12s} {row['samples_per_s']:10.1f} {ratio:>13s} {row['peak_rss_mib']:13d} "
                  f"{row['accuracy']:14.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
