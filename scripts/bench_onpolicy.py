"""What on-policy batches cost (distill.on_policy): seconds per training step with and without them, side by side.

Builds one training job from a causal-lm recipe (the SmolLM2 one unless named), then times its first training
windows in turns: an ordinary step (teacher and student on the data's text), and the same window as an on-policy
step (the student samples each row's second half token by token, then the teacher scores it). Nothing is saved;
the job's output folder is a temp folder. Prints seconds per step and the ratio (medians of neighbouring pairs).

    .venv/bin/python scripts/bench_onpolicy.py                                  # after bash scripts/lm_check.sh
    .venv/bin/python scripts/bench_onpolicy.py recipes/lm/distill-smollm2-L15.yaml --windows 3 train.batch_size=4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "lm" / "distill-smollm2-L15.yaml"))
    ap.add_argument("--windows", type=int, default=3, help="training windows timed each way")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    args = ap.parse_args()

    from brewcli.onpolicy import OnPolicy
    from brewcli.plan import build_plan
    from brewcli.recipe import load_recipe
    from brewcli.train import Meter, build_job

    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(args.recipe, [*args.overrides, f"train.output_dir={out}", "distill.teacher_cache=off"])
        job = build_job(build_plan(recipe))
        t = recipe.train
        windows = []
        for window, _ in job.windows():
            windows.append(window)
            if len(windows) == args.windows:
                break
        times = {"ordinary": [], "on-policy": []}
        always = OnPolicy(1.0, t.seed, job.plan.task, job.plan.tokenizer)
        for window in windows:  # in turns, so both see the same machine load
            for kind, policy in (("ordinary", None), ("on-policy", always)):
                job.on_policy = policy
                start = time.perf_counter()
                job.step(window, Meter())
                times[kind].append(time.perf_counter() - start)
        sampling = []  # the rollout alone: the student writing each row's second half
        for i, window in enumerate(windows):
            start = time.perf_counter()
            new = always(window[0], job.plain_student, i + 1, 0)
            sampling.append(time.perf_counter() - start)
        written = int((new.labels["labels"] != -100).sum())
    tokens = t.batch_size * recipe.data.max_length
    ratios = [b / a for a, b in zip(times["ordinary"], times["on-policy"])]
    print(f"{args.windows} windows of {t.batch_size} x {recipe.data.max_length} tokens each way (a new token per "
          f"sampled position: about {tokens // 2} a window)")
    for kind, values in times.items():
        print(f"  {kind:<10} {statistics.median(values):7.2f} s a step   ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"  on-policy / ordinary: {statistics.median(ratios):.2f}x")
    print(f"  of which sampling   {statistics.median(sampling):7.2f} s a micro-batch ({written} tokens written in the last)")


if __name__ == "__main__":
    main()
