"""Prepare the sentence-embedding check's data, from PyPI packages only.

  DATA/bbc-embed/{train,test}.jsonl  BBC News (data/bbc, prepare_bbc.py's split) as {title, body}: the headline
                                     and the article without it, for title-to-article retrieval (recall@k)
  DATA/lee/pairs.jsonl               the Lee document-similarity set from gensim 4.4.0's test data (lee.cor, 50
                                     news documents, and similarities0-1.txt, their mean human similarity): its
                                     1,225 document pairs as {sentence1, sentence2, score} (STS format)

gensim is never installed: prepare_general.py's helper takes the two files out of its wheel (pip download).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts")]
from prepare_general import gensim_sources  # noqa: E402

LEE_FILES = {"lee.cor": "gensim/test/test_data/lee.cor",
             "similarities0-1.txt": "gensim/test/test_data/similarities0-1.txt"}
LEE_SHA256 = {"lee.cor": "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
              "similarities0-1.txt": "23762bc6b728897144dda3d324a2c032dc1e059e1009806226d64b6dd123ed79"}


def title_body(row: dict) -> dict:
    """A BBC row's headline and its article without the headline (prepare_bbc.py glues them)."""
    title, text = row["title"], row["text"]
    body = text[len(title):].strip() if text.startswith(title) else text
    return {"title": title, "body": body}


def lee_pairs(corpus: Path, similarities: Path) -> list[dict]:
    """Every pair i < j of the 50 documents with the human similarity of the upper triangle."""
    # lee.cor is Latin-1 (a pound sign, 0xA3)
    docs = [" ".join(line.split()) for line in corpus.read_text(encoding="latin-1").splitlines() if line.strip()]
    matrix = [[float(x) for x in line.split()] for line in similarities.read_text().splitlines() if line.strip()]
    if len(docs) != len(matrix) or any(len(r) != len(docs) for r in matrix):
        raise SystemExit(f"{corpus} has {len(docs)} documents but {similarities} is {len(matrix)} x "
                         f"{len(matrix[0]) if matrix else 0}")
    return [{"sentence1": docs[i], "sentence2": docs[j], "score": matrix[i][j]}
            for i in range(len(docs)) for j in range(i + 1, len(docs))]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def prepare(data: Path, limit: int | None = None) -> dict[str, int]:
    counts = {}
    for split in ("train", "test"):
        src = data / "bbc" / f"{split}.jsonl"
        if not src.is_file():
            raise SystemExit(f"no {src}: run scripts/prepare_bbc.py --out {data} first")
        rows = [title_body(json.loads(line)) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
        write_jsonl(data / "bbc-embed" / f"{split}.jsonl", rows[:limit])
        counts[f"bbc-embed/{split}"] = len(rows[:limit])
    lee = gensim_sources(data / "lee" / "sources", LEE_FILES, LEE_SHA256)
    pairs = lee_pairs(lee["lee.cor"], lee["similarities0-1.txt"])
    write_jsonl(data / "lee" / "pairs.jsonl", pairs[:limit])
    counts["lee/pairs"] = len(pairs[:limit])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows of each file (smoke runs)")
    args = parser.parse_args()
    counts = prepare(args.out, args.limit)
    print(", ".join(f"{k}: {v} rows" for k, v in counts.items()) + f" in {args.out}")


if __name__ == "__main__":
    main()
