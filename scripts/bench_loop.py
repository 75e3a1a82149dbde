"""Benchmark: brew's training loop against a minimal hand-written distillation loop, side by side.

Both train the same student (T3 from the teacher's layers) against the same teacher on the same batches,
with logit KD plus hidden-state MSE on 4 layer pairs, for the same number of steps. The ratio shows what
brew's loop (accelerate, loss registry, logging, progress, checkpoint bookkeeping) costs over the bare
minimum. Needs the quickstart's data and teacher:

    python scripts/prepare_bbc.py && brew train recipes/bbc/teacher.yaml
    python scripts/bench_loop.py [--steps 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from brewcli.data import loader, tokenize
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import build_models, run


def hand_loop(plan, steps: int) -> float:
    torch.manual_seed(0)
    teachers, student = build_models(plan)
    teacher = teachers["teacher"]
    ds = tokenize(plan.splits.train, plan.tokenizer, plan.recipe.data)
    batches = iter(loader(ds.shuffle(seed=0), plan.tokenizer, plan.recipe.train.batch_size))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, fused=True)
    pairs = [(m.teacher_layer, m.student_layer) for m in plan.matches]
    tau = plan.recipe.distill.temperature
    start = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        with torch.no_grad():
            t = teacher(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
        s = student(**batch, output_hidden_states=True)
        loss = -(F.softmax(t.logits / tau, -1) * F.log_softmax(s.logits / tau, -1)).sum(-1).mean()
        m = batch["attention_mask"].unsqueeze(-1).float()
        for tl, sl in pairs:
            loss = loss + ((s.hidden_states[sl] - t.hidden_states[tl]) ** 2 * m).sum() / (m.sum() * s.hidden_states[sl].size(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def brew_loop(recipe_path: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(recipe_path, [f"train.output_dir={out}", f"train.max_steps={steps}",
                                           "data.test_split=null", "data.eval_fraction=null", "train.log_every=1000",
                                           "train.save_every=100000", "train.keep_best=null"])
        return run(build_plan(recipe))["train_seconds"]  # the loop only: the final save is not counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/bbc/distill-T3.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="each round runs both loops, alternating which goes first")
    args = parser.parse_args()
    plan = build_plan(load_recipe(args.recipe))
    times: dict[str, list[float]] = {"hand-written": [], "brew": []}
    for i in range(args.rounds):
        order = ["hand-written", "brew"] if i % 2 == 0 else ["brew", "hand-written"]
        for name in order:
            times[name].append(hand_loop(plan, args.steps) if name == "hand-written" else brew_loop(args.recipe, args.steps))
    bs, n = plan.recipe.train.batch_size, args.steps
    print(f"\n{n} steps of batch {bs} x {plan.recipe.data.max_length} tokens, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds alternating the order")
    for name, ts in times.items():
        mean = sum(ts) / len(ts)
        print(f"{name:13s} {mean:6.1f} s mean ({n * bs / mean:5.1f} examples/s); rounds: {', '.join(f'{t:.1f}' for t in ts)}")
    ratio = sum(times["brew"]) / sum(times["hand-written"])
    print(f"brew / hand-written time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
