"""Which of a decoder's layers to keep in a student made from them (`student.teacher_layers`): greedy pruning.

Starting from every layer, drop one layer at a time, each time the one whose removal raises the perplexity least
on a few windows of training text, until --keep remain (the first and the last layer always stay). It prints each
step and the list to paste into the recipe. This is how recipes/lm/distill-smollm2-L15.yaml chose its 15 layers;
about 10 minutes for SmolLM2-135M on 2 CPU cores at 4 windows of 128 tokens; --start goes on from an earlier
result (15 -> 12 layers: a minute or two).

    .venv/bin/python scripts/lm_select_layers.py --model data/smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data data/bbc/train.jsonl --keep 15
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def windows(path: Path, column: str, tokenizer, n: int, length: int, rows: int):
    """n windows of `length` tokens from the last `rows` rows of a JSON-lines file (a run that caps its training
    rows reads the first ones), documents joined by the end-of-text token."""
    import torch

    texts = [json.loads(line)[column] for line in path.read_text().splitlines() if line.strip()][-rows:]
    end = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + end
    if len(ids) < n * length:
        sys.exit(f"{path}: {len(ids)} tokens in its last {rows} rows, fewer than {n} windows of {length}")
    return torch.tensor(ids[: n * length]).view(n, length)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a Hugging Face causal-LM folder (or the folder of --gguf-file)")
    ap.add_argument("--gguf-file", help="a GGUF file in --model")
    ap.add_argument("--data", type=Path, required=True, help="a JSON-lines file with a text column")
    ap.add_argument("--column", default="text")
    ap.add_argument("--keep", type=int, required=True, help="layers the student keeps")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rows", type=int, default=60, help="read the file's last ROWS rows")
    ap.add_argument("--start", type=lambda v: [int(i) for i in v.strip("[]").split(",")],
                    help="go on from these layers (an earlier run's list, e.g. 0,1,2,7): greedy, so the same result")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from brewcli.models.families import family

    extra = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(args.model, **extra)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **extra).eval()
    prefix = family(model.config).layer_prefix
    owner_name, _, attr = next(name for name, m in model.named_modules()
                               if isinstance(m, torch.nn.ModuleList) and (name == prefix or name.endswith("." + prefix))
                               ).rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    layers = list(getattr(owner, attr))
    if not 2 <= args.keep < len(layers):
        sys.exit(f"--keep {args.keep}: expected 2 to {len(layers) - 1} (the model has {len(layers)} layers)")
    x = windows(args.data, args.column, tokenizer, args.windows, args.max_length, args.rows)

    def perplexity(keep: list[int]) -> float:
        setattr(owner, attr, torch.nn.ModuleList([layers[i] for i in keep]))
        with torch.no_grad():
            return math.exp(model(input_ids=x, labels=x, use_cache=False).loss.item())

    keep = args.start or list(range(len(layers)))
    if not (2 < len(keep) and set(keep) <= set(range(len(layers))) and args.keep < len(keep)):
        sys.exit(f"--start {keep}: expected more than --keep layers, each of 0 to {len(layers) - 1}")
    start = "all" if args.start is None else "starting from"
    print(f"{start} {len(keep)} layers: perplexity {perplexity(keep):.1f}", flush=True)
    while len(keep) > args.keep:
        ppl, drop = min((perplexity([k for k in keep if k != c]), c) for c in keep[1:-1])
        keep.remove(drop)
        print(f"{len(keep)} layers: drop {drop}, perplexity {ppl:.1f}", flush=True)
    print(f"teacher_layers: {keep}")


if __name__ == "__main__":
    main()
