"""The teacher-output cache: what the loss terms read from the teacher, stored once per example and reused.

An entry holds exactly the teacher features the terms need (`Needs`: the logits and the hidden-state and
attention layers the matches name), per training row, unpadded, in fp16 (or fp32), so shuffling, dynamic
padding, length grouping, resume and several processes keep working. Its key covers everything the stored
values depend on: the teacher's weights (file hashes, or the Hub revision), its tokenizer files, the tokenised
rows themselves, `max_length`, the task, the features, the dtype, the compute precision and the format version.
A changed teacher, tokenizer or data is a different key, so a stale entry is never read.

This module decides what is stored, under which key and where (`plan_cache`, at plan time), and lists and
removes entries; `cache_entry.py` writes, checks and reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from brewcli.errors import BrewError, RecipeError
from brewcli.lazy import np
from brewcli.models.hf import TOKENIZER_FILES as MODEL_TOKENIZER_FILES
from brewcli.topk import TopK

FORMAT = 1
DTYPES = {"fp16": "float16", "fp32": "float32"}
TOKENIZER_FILES = (*MODEL_TOKENIZER_FILES, "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
def default_root() -> Path:
    return Path(os.environ.get("BREW_CACHE") or Path.home() / ".cache" / "brew").expanduser()


def root_key(recipe) -> str:
    """The setting that chose the cache folder, for messages."""
    if recipe.distill.cache_dir:
        return "distill.cache_dir"
    return "BREW_CACHE (environment)" if os.environ.get("BREW_CACHE") else "distill.teacher_cache"


def not_a_folder(root: Path) -> str | None:
    """Why `root` can never be a cache folder (it, or a folder above it, is a file), or None."""
    if root.exists() and not root.is_dir():
        return f"{root} is a file, not a folder"
    above = next((p for p in root.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot create the cache folder {root}: {above} is a file, not a folder"
    return None


def chosen_root(cache_dir: str | None) -> Path:
    """The folder `brew cache ls/rm` work on: --cache-dir, else $BREW_CACHE, else ~/.cache/brew; never a file."""
    root = Path(cache_dir).expanduser() if cache_dir else default_root()
    problem = not_a_folder(root)
    if problem:
        setting = "--cache-dir" if cache_dir else "BREW_CACHE (environment)" if os.environ.get("BREW_CACHE") else \
            "the default cache folder"
        raise BrewError(f"{setting}: {problem}; give the teacher cache's folder")
    return root


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """How one stored feature is laid out per row: `seq` (W,), `tok` (tokens, W) or `att` (W heads, tokens, tokens)."""

    name: str  # logits, or a feature's name (features.feature_name: hidden.K, attention.K, q.K, ...)
    kind: str
    width: int
    dtype: str | None = None  # numpy's name, where not the entry's (a top-k target holds token ids: float32)

    def elements(self, lengths):
        n = lengths.astype(np.int64)
        return {"seq": np.full_like(n, self.width), "tok": n * self.width, "att": self.width * n * n}[self.kind]

    def shape(self, length: int) -> tuple[int, ...]:
        return {"seq": (self.width,), "tok": (length, self.width), "att": (self.width, length, length)}[self.kind]


def layouts(needs, task, teacher_config, top_k=None) -> list[Layout]:
    from brewcli.models.families import read_widths
    from brewcli.models.features import FEATURE_KINDS, feature_name

    w = read_widths(teacher_config)
    kind = "tok" if task.per_token else "seq"
    logits = Layout("logits", kind, top_k.width, "float32") if top_k else \
        Layout("logits", kind, task.logit_width(teacher_config))
    out = [logits] if needs.logits else []
    for kind, layer in needs.keys():
        k = FEATURE_KINDS.get(kind)
        out.append(Layout(feature_name(kind, layer), k.layout, k.width(w)))
    return out


# ---------------------------------------------------------------------------------------------- the key


def _hash_file(path: Path, memo: dict) -> str:
    """blake2b of a file's bytes, remembered by (path, size, mtime) so a large teacher is hashed once."""
    st = path.stat()
    tag = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if tag not in memo:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        memo[tag] = h.hexdigest()
    return memo[tag]


def _memo(root: Path) -> tuple[dict, Path]:
    """The remembered file hashes; a damaged file-hashes.json (not JSON, not an object) is started afresh."""
    path = root / "file-hashes.json"
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, path
    return ({k: v for k, v in memo.items() if isinstance(v, str)} if isinstance(memo, dict) else {}), path


def teacher_fingerprint(ref: str, revision: str | None, root: Path) -> dict:
    """What identifies the teacher's weights and tokenizer: file hashes of a local folder, or the Hub commit."""
    folder = Path(ref).expanduser()
    if folder.is_dir():
        memo, memo_path = _memo(root)
        files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES
                                                                      or p.name == "config.json"))
        tokenizer = sorted(p for p in folder.iterdir() if p.name in TOKENIZER_FILES)
        out = {"weights": {p.name: _hash_file(p, memo) for p in files},
               "tokenizer": {p.name: _hash_file(p, memo) for p in tokenizer}}
        try:
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, memo_path)
        except OSError:
            pass
        return out
    return {"hub": ref, "commit": _hub_commit(ref, revision)}


def _hub_commit(ref: str, revision: str | None) -> str:
    """The commit a Hub id resolves to: from the local Hugging Face cache, or asked of the Hub."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref, "config.json", revision=revision)
    if isinstance(found, str) and "/snapshots/" in found:
        return found.split("/snapshots/")[1].split("/")[0]
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(ref, revision=revision).sha
    except Exception as e:  # offline, or not on the Hub: the plan has already loaded its config, so rare
        raise RecipeError("distill.teacher_cache", f"cannot tell which revision of '{ref}' the cache would hold "
                          f"({str(e).splitlines()[0][:120]})", "set teacher.revision, or teacher_cache: off") from None


def data_fingerprint(encoded, columns: list[str]) -> str:
    """blake2b of the tokenised rows (their lengths and token ids), in row order."""
    import pyarrow.compute as pc

    h = hashlib.blake2b(digest_size=16)
    h.update(str(len(encoded)).encode())
    table = encoded.with_format("arrow", columns=columns)
    for start in range(0, len(encoded), 65536):
        batch = table[start:start + 65536]
        for col in columns:
            arr = batch[col].combine_chunks()
            h.update(col.encode())
            h.update(pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
            h.update(arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return h.hexdigest()


def row_lengths(encoded, column: str = "attention_mask"):
    """Real tokens per row (the teacher's attention mask summed), without decoding rows one by one."""
    import pyarrow.compute as pc

    table = encoded.with_format("arrow", columns=[column])
    parts = []
    for start in range(0, len(encoded), 65536):
        arr = table[start:start + 65536][column].combine_chunks()
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        sums = np.add.reduceat(arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64),
                               np.r_[0, np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        parts.append(np.where(lengths > 0, sums, 0))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- the plan


@dataclass
class CachePlan:
    mode: str  # disk | memory
    root: Path
    key: str
    dtype: str  # fp16 | fp32
    layouts: list[Layout]
    lengths: object  # np.ndarray (rows,) real teacher tokens per training row
    identity: dict  # what the key covers, readable (saved in the manifest, shown by `brew cache ls`)
    bytes: int
    hit: bool
    setting: str  # the recipe key (or environment variable) that chose the folder

    @property
    def path(self) -> Path:
        return self.root / self.key

    def describe(self) -> str:
        from brewcli.ui import human

        where = "in memory" if self.mode == "memory" else str(self.path)
        state = "hit: the teacher does not run during training" if self.hit else \
            "miss: filled by one teacher pass before training"
        feats = ", ".join(lay.name + (f" ({lay.dtype}: top-k ids)" if lay.dtype else "") for lay in self.layouts)
        dtype = f" {self.dtype}" if any(lay.dtype is None for lay in self.layouts) else ""
        return f"{self.mode} ({state}); {feats}; {human(self.bytes, 'B')}{dtype}; {where}"


def keyed(identity):
    """The part of an entry's identity its key covers: a local teacher folder is known by its files' hashes, not by
    where it lies, so a moved or copied teacher (another clone, an absolute path) still hits."""
    if isinstance(identity, dict) and isinstance(identity.get("teacher_files"), dict) and \
            "weights" in identity["teacher_files"]:
        return {k: v for k, v in identity.items() if k != "teacher"}
    return identity


def plan_cache(plan, teacher, needs, teacher_inputs: list[str]) -> tuple[CachePlan | None, str | None]:
    """(the cache `teacher` is read from in this run, or None; a note when `auto` falls back to the live teacher)."""
    r = plan.recipe
    d = r.distill
    mode = d.teacher_cache
    if mode == "off" or needs is None or needs == type(needs)():
        return None, None
    top_k = TopK.of(d)
    if d.on_policy > 0:
        return None, "teacher cache off: distill.on_policy has the teacher score the student's own text; it runs live"
    if needs.logits and plan.task.vocabulary_wide and top_k is None:
        why = (f"task '{plan.task.name}''s KD reads vocabulary-wide logits, which the teacher cache stores only as "
               "the teacher's top k tokens")
        if mode == "auto":
            return None, f"teacher cache off: {why} (distill.top_k); the teacher runs live"
        raise RecipeError("distill.teacher_cache", f"is {mode}, but {why}",
                          "set distill.top_k (e.g. 64) to cache those, or distill.teacher_cache: auto or off")
    root = Path(d.cache_dir).expanduser() if d.cache_dir else default_root()
    setting = root_key(r)
    if mode == "memory":
        root_ok = None
    else:
        root_ok = _writable(root)
        if root_ok is not None:
            named_a_file = setting != "distill.teacher_cache" and not_a_folder(root) is not None
            if mode == "auto" and not named_a_file:  # a folder the user named that is a file: an error, even on auto
                return None, f"teacher cache off: {root_ok} ({setting})"
            raise RecipeError(setting, root_ok, "set distill.cache_dir (or BREW_CACHE) to a folder you can write to, "
                              "or distill.teacher_cache: memory / off")
    lays = layouts(needs, plan.task, teacher.config, top_k if needs.logits else None)
    encoded = teacher.encoded if teacher.encoded is not None else plan.encoded["train"]
    lengths = row_lengths(encoded)
    scale = encoded.scale if getattr(encoded, "estimated", False) else 1  # a dry run's sample of a large corpus
    size = int(sum(int(lay.elements(lengths).sum()) * np.dtype(lay.dtype or DTYPES[d.cache_dtype]).itemsize
                   for lay in lays) * scale)
    identity = {
        "format": FORMAT,
        "teacher": teacher.spec.model,
        "teacher_files": teacher_fingerprint(teacher.spec.model, teacher.spec.revision, root) if mode != "memory"
        else None,
        "data": data_fingerprint(encoded, teacher_inputs),
        "rows": len(lengths),
        "max_length": r.data.max_length,
        "task": plan.task.name,
        "features": [lay.name for lay in lays],
        "dtype": d.cache_dtype,
        "precision": r.train.precision,
    }
    if top_k is not None and needs.logits:  # (only then: the keys of every other entry stay as they were)
        identity.update(top_k=top_k.k, temperature=top_k.temperature)
    key = hashlib.blake2b(json.dumps(keyed(identity), sort_keys=True).encode(), digest_size=12).hexdigest()
    hit = mode != "memory" and keyed(manifest(root / key).get("identity")) == keyed(identity)
    cp = CachePlan("memory" if mode == "memory" else "disk", root, key, d.cache_dtype, lays, lengths, identity, size,
                   hit, setting)
    if not hit:
        free, what = _free(cp)
        if size > 0.9 * free:
            from brewcli.ui import human

            why = (f"the teacher cache needs about {human(size, 'B')} but {what} has {human(free, 'B')} free")
            if mode == "auto":
                return None, f"teacher cache off: {why}"
            raise RecipeError(setting if cp.mode == "disk" else "distill.teacher_cache", why,
                              "free space, point distill.cache_dir (or BREW_CACHE) at a larger disk, store fewer "
                              "matches, or set distill.teacher_cache: off")
    return cp, None


def _writable(root: Path) -> str | None:
    problem = not_a_folder(root)
    if problem:
        return problem
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create the cache folder {root} ({e.strerror or e})"
    if not os.access(root, os.W_OK):
        return f"cannot write in the cache folder {root} (permission denied)"
    return None


def _free(cp: CachePlan) -> tuple[int, str]:
    if cp.mode == "memory":
        import psutil

        return psutil.virtual_memory().available, "memory"
    return shutil.disk_usage(cp.root).free, str(cp.root)


# what `brew cache ls` shows of an entry's identity, and the JSON type each must have
_SHOWN = {"teacher": str, "data": str, "task": str, "features": list, "rows": int, "max_length": int, "dtype": str}


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number")


def read_manifest(folder: Path) -> tuple[dict, str | None]:
    """An entry's manifest.json, and why it is unusable when it is (missing, not JSON, keys of the wrong type):
    then the manifest is {} and the entry counts as damaged (rebuilt by the next fill, removable by brew cache rm)."""
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        return {}, "it has no manifest.json"
    except (OSError, ValueError) as e:
        return {}, f"its manifest.json is not readable JSON ({type(e).__name__})"
    if not isinstance(m, dict):
        return {}, f"its manifest.json holds {_kind(m)}, not an object"
    for k in ("identity", "checksums"):
        if not isinstance(m.get(k), dict):
            return {}, f"its manifest.json has {_kind(m.get(k)) if k in m else 'no'} {k}" + \
                (", not an object" if k in m else "")
    ident = m["identity"]
    for k, want in _SHOWN.items():
        v = ident.get(k)
        if not isinstance(v, want) or isinstance(v, bool) or (want is list and not all(isinstance(x, str) for x in v)):
            return {}, f"its manifest.json has identity.{k} {_kind(v) if k in ident else 'missing'}" + \
                (f", expected {_kind(want())}" + (" of names" if want is list else "") if k in ident else "")
    if not all(isinstance(v, str) for v in m["checksums"].values()):
        return {}, "its manifest.json has checksums that are not strings"
    return m, None


def manifest(path: Path) -> dict:
    """A sound entry's manifest, or {} (missing or damaged)."""
    return read_manifest(path)[0]


# ---------------------------------------------------------------------------------------------- brew cache ls / rm


def lock_path(root: Path, key: str) -> Path:
    """The file whose flock a fill of KEY holds until the entry is in place."""
    return root / f"{key}.lock"


def _filling(root: Path, key: str) -> bool:
    """Whether a run holds KEY's fill lock now: its KEY.tmp is being written, not left by an interrupted fill."""
    import fcntl

    lock = lock_path(root, key)
    if not lock.is_file():
        return False
    try:
        with open(lock, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:  # a lock file brew cannot open: no run can hold it either
        return False
    return False


AUGMENT_DIR = "augment"  # data.augment's stored sets (augment.py), beside the entries


def augmented_sets(root: Path) -> tuple[int, int]:
    """How many augmented sets are stored under root, and their bytes."""
    folder = root / AUGMENT_DIR
    sets = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return len(sets), sum(f.stat().st_size for p in sets for f in p.rglob("*") if f.is_file())


def entries(root: Path) -> list[dict]:
    """Every entry under root. state: complete, damaged (no sound manifest: `problem` says why; rebuilt by the next
    run that needs it, or removed by brew cache rm), filling (a run writes it now) or interrupted (a fill that was
    killed left its KEY.tmp: never read, removed by the next fill or brew cache rm)."""
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != AUGMENT_DIR):
        key, partial = folder.name.removesuffix(".tmp"), folder.name.endswith(".tmp")
        m, problem = ({}, None) if partial else read_manifest(folder)
        ident = m.get("identity", {})
        used = folder / "last_used"
        state = ("filling" if _filling(root, key) else "interrupted") if partial else "complete" if m else "damaged"
        shown = {k: ident.get(k) for k in _SHOWN}
        if isinstance(ident.get("top_k"), int) and isinstance(shown["features"], list):  # causal-lm's top-k target
            shown["features"] = [f"logits (top {ident['top_k']})" if f == "logits" else f for f in shown["features"]]
        out.append({"key": key, **shown,
                    "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
                    "last_used": used.stat().st_mtime if used.is_file() else None, "path": str(folder),
                    "complete": bool(m), "state": state, "problem": problem})
    return out


def remove(root: Path, keys: list[str], everything: bool) -> list[str]:
    """Remove entries by key prefix, or all; an entry a run is filling now is left alone (it is in use)."""
    found = [e for e in entries(root) if e["state"] != "filling"]
    if everything:
        chosen = found
    else:
        chosen = []
        for k in keys:
            match = [e for e in found if e["key"].startswith(k)]
            if len(match) != 1:
                from brewcli.errors import did_you_mean

                what = "no entry" if not match else f"{len(match)} entries"
                hint = did_you_mean(k, sorted({e["key"] for e in found}))
                raise BrewError(f"brew cache rm: {what} in {root} start with '{k}'" + (f"; {hint}" if hint else "")
                                + "; see brew cache ls")
            chosen += match
    for e in chosen:
        shutil.rmtree(e["path"], ignore_errors=True)
    if everything:
        shutil.rmtree(root / AUGMENT_DIR, ignore_errors=True)
    return [e["key"] for e in chosen]
