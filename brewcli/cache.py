"""The teacher-output cache: what the loss terms read from the teacher, stored once per example and reused.

An entry holds exactly the teacher features the terms need (`Needs`: the logits and the hidden-state and
attention layers the matches name), per training row, unpadded, in fp16 (or fp32), so shuffling, dynamic
padding, length grouping, resume and several processes keep working. Its key covers everything the stored
values depend on: the teacher's weights (file hashes, or the Hub revision), its tokenizer files, the tokenised
rows themselves, `max_length`, the task, the features, the dtype, the compute precision and the format version.
A changed teacher, tokenizer or data is a different key, so a stale entry is never read.

Layout of an entry folder `<root>/<key>/`: `manifest.json` (written last), `lengths.npy` (each row's real
teacher tokens) and one flat `.npy` per feature, read memory-mapped (a cache larger than RAM works). A fill
writes into `<key>.tmp/` and renames it into place when every row is written, so an interrupted fill leaves
nothing that looks like an entry. Damage (a missing or truncated file, a changed byte in the checked blocks)
is found on load; the run then rebuilds the entry and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from brewcli.errors import BrewError, RecipeError, doing
from brewcli.lazy import np, torch

FORMAT = 1
DTYPES = {"fp16": "float16", "fp32": "float32"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "spm.model", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CHECK_BLOCK, CHECK_BLOCKS = 1 << 20, 16  # files larger than 16 MiB: 16 blocks of 1 MiB are checksummed


class CacheDamaged(BrewError):
    pass


def default_root() -> Path:
    return Path(os.environ.get("BREW_CACHE") or Path.home() / ".cache" / "brew").expanduser()


def root_key(recipe) -> str:
    """The setting that chose the cache folder, for messages."""
    if recipe.distill.cache_dir:
        return "distill.cache_dir"
    return "BREW_CACHE (environment)" if os.environ.get("BREW_CACHE") else "distill.teacher_cache"


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """How one stored feature is laid out per row: `seq` (W,), `tok` (tokens, W) or `att` (W heads, tokens, tokens)."""

    name: str  # logits | hidden.K | attention.K
    kind: str
    width: int

    def elements(self, lengths):
        n = lengths.astype(np.int64)
        return {"seq": np.full_like(n, self.width), "tok": n * self.width, "att": self.width * n * n}[self.kind]

    def shape(self, length: int) -> tuple[int, ...]:
        return {"seq": (self.width,), "tok": (length, self.width), "att": (self.width, length, length)}[self.kind]


def layouts(needs, task, teacher_config) -> list[Layout]:
    from brewcli.families import read_widths

    w = read_widths(teacher_config)
    out = [Layout("logits", "tok" if task.per_token else "seq", task.logit_width(teacher_config))] if needs.logits else []
    out += [Layout(f"hidden.{k}", "tok", w.hidden) for k in sorted(needs.hidden)]
    out += [Layout(f"attention.{k}", "att", w.heads) for k in sorted(needs.attention)]
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
    path = root / "file-hashes.json"
    try:
        return json.loads(path.read_text()), path
    except (OSError, ValueError):
        return {}, path


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
        feats = ", ".join(lay.name for lay in self.layouts)
        return f"{self.mode} ({state}); {feats}; {human(self.bytes, 'B')} {self.dtype}; {where}"


def plan_cache(plan, teacher, needs, teacher_inputs: list[str]) -> tuple[CachePlan | None, str | None]:
    """(the cache `teacher` is read from in this run, or None; a note when `auto` falls back to the live teacher)."""
    r = plan.recipe
    d = r.distill
    mode = d.teacher_cache
    if mode == "off" or needs is None or needs == type(needs)():
        return None, None
    root = Path(d.cache_dir).expanduser() if d.cache_dir else default_root()
    setting = root_key(r)
    if mode == "memory":
        root_ok = None
    else:
        root_ok = _writable(root)
        if root_ok is not None:
            if mode == "auto":
                return None, f"teacher cache off: {root_ok} ({setting})"
            raise RecipeError(setting, root_ok, "set distill.cache_dir (or BREW_CACHE) to a folder you can write to, "
                              "or distill.teacher_cache: memory / off")
    lays = layouts(needs, plan.task, teacher.config)
    encoded = teacher.encoded if teacher.encoded is not None else plan.encoded["train"]
    lengths = row_lengths(encoded)
    itemsize = 2 if d.cache_dtype == "fp16" else 4
    size = int(sum(int(lay.elements(lengths).sum()) for lay in lays) * itemsize)
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
    key = hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=12).hexdigest()
    hit = mode != "memory" and _manifest(root / key).get("identity") == identity
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
    if root.exists() and not root.is_dir():
        return f"{root} is a file, not a folder"
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


def _manifest(path: Path) -> dict:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------- entries


def _offsets(lay: Layout, lengths):
    return np.concatenate([[0], np.cumsum(lay.elements(lengths))]).astype(np.int64)


def _checksum(path: Path) -> str:
    """blake2b of the whole file, or of 16 evenly spaced 1 MiB blocks and the size for a large one."""
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= CHECK_BLOCK * CHECK_BLOCKS:
            h.update(f.read())
        else:
            for i in range(CHECK_BLOCKS):
                f.seek((size - CHECK_BLOCK) * i // (CHECK_BLOCKS - 1))
                h.update(f.read(CHECK_BLOCK))
    return h.hexdigest()


@dataclass
class Entry:
    """One cache entry's arrays: memory-mapped files (disk) or arrays in RAM (memory)."""

    layouts: list[Layout]
    lengths: object
    arrays: dict = field(default_factory=dict)  # feature name -> flat array
    offsets: dict = field(default_factory=dict)

    def __post_init__(self):
        self.offsets = {lay.name: _offsets(lay, self.lengths) for lay in self.layouts}

    @classmethod
    def allocate(cls, cp: CachePlan, folder: Path | None) -> Entry:
        e = cls(cp.layouts, cp.lengths)
        dtype = DTYPES[cp.dtype]
        for lay in cp.layouts:
            n = int(e.offsets[lay.name][-1])
            if folder is None:
                e.arrays[lay.name] = np.zeros(n, dtype=dtype)
            else:
                e.arrays[lay.name] = np.lib.format.open_memmap(folder / f"{lay.name}.npy", mode="w+", dtype=dtype,
                                                               shape=(n,))
        if folder is not None:
            np.save(folder / "lengths.npy", np.asarray(cp.lengths, dtype=np.int64))
        return e

    @classmethod
    def open(cls, cp: CachePlan, mode: str = "r", verify: bool = True) -> Entry:
        folder = cp.path if mode == "r" else cp.path.with_suffix(".tmp")
        manifest = _manifest(folder) if mode == "r" else {}
        if mode == "r" and manifest.get("identity") != cp.identity:
            raise CacheDamaged("its manifest.json is missing or does not match")
        try:
            lengths = np.load(folder / "lengths.npy")
            e = cls(cp.layouts, lengths)
            if not np.array_equal(lengths, cp.lengths):
                raise CacheDamaged("its row lengths do not match the data")
            for lay in cp.layouts:
                path = folder / f"{lay.name}.npy"
                if verify and mode == "r" and _checksum(path) != manifest["checksums"].get(lay.name):
                    raise CacheDamaged(f"{path.name} does not match its checksum")
                e.arrays[lay.name] = np.load(path, mmap_mode=mode if mode == "r" else "r+")
                if e.arrays[lay.name].shape != (int(e.offsets[lay.name][-1]),):
                    raise CacheDamaged(f"{path.name} has the wrong size")
        except (OSError, ValueError, KeyError) as err:
            raise CacheDamaged(f"{type(err).__name__}: {str(err)[:160]}") from None
        if mode == "r":
            (folder / "last_used").touch()
        return e

    def write(self, row: int, name: str, values) -> None:
        off = self.offsets[name]
        self.arrays[name][off[row]:off[row + 1]] = values.reshape(-1)

    def read(self, row: int, lay: Layout):
        off = self.offsets[lay.name]
        return self.arrays[lay.name][off[row]:off[row + 1]].reshape(lay.shape(int(self.lengths[row])))

    def flush(self) -> None:
        for a in self.arrays.values():
            if hasattr(a, "flush"):
                a.flush()


# ---------------------------------------------------------------------------------------------- fill and read


def _feature(features, name: str):
    if name == "logits":
        return features.logits
    kind, layer = name.split(".")
    return getattr(features, kind)[int(layer)]


def _rows_of(features, lay: Layout) -> list:
    """Split a batch's live feature into per-row arrays of real tokens (padding removed)."""
    x, keep = _feature(features, lay.name).detach().float().cpu(), features.mask.bool().cpu()
    if lay.kind == "seq":
        return list(x)
    if lay.kind == "tok":
        return [x[i][keep[i]] for i in range(x.size(0))]
    return [x[i][:, keep[i]][:, :, keep[i]] for i in range(x.size(0))]


def fill(cp: CachePlan, live, encoded, collate, batch_size: int, acc) -> Entry:
    """Run the teacher once over every training row and store what the terms read. Under several processes each
    fills its share of a disk entry (shared files); a memory entry is filled whole by every process."""
    from brewcli import data as data_mod
    from brewcli.ui import Progress

    n = len(cp.lengths)
    rank, world = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    tmp = cp.path.with_suffix(".tmp")
    shared = cp.mode == "disk"
    lock = None
    if shared:
        if rank == 0:
            lock = _lock(cp)  # held until the entry is in place: a second run of the same key waits, then reads it
            if not (cp.path / "manifest.json").exists():
                shutil.rmtree(tmp, ignore_errors=True)  # a fill that was interrupted
                tmp.mkdir(parents=True)
                Entry.allocate(cp, tmp).flush()
        _barrier(acc)
        if not tmp.exists():  # another run filled it while this one waited
            _barrier(acc)
            lock and lock.close()
            return Entry.open(cp)
        entry = Entry.open(cp, mode="r+")
        mine = list(range(rank, n, world))
    else:
        entry = Entry.allocate(cp, None)
        mine = list(range(n))
    mine.sort(key=lambda i: -int(cp.lengths[i]))  # longest first: similar lengths share a batch, little padding
    doing(f"filling the teacher cache ({n} rows)")
    from contextlib import nullcontext

    progress = Progress(len(mine), 0, enabled=rank == 0, description="teacher cache")
    done = 0
    device = acc.device if acc is not None else torch.device("cpu")
    # the loader draws a seed from the global RNG: keep it untouched, so a run trains the same with or without a fill
    with progress, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in data_mod.loader(encoded, collate, batch_size, mine):
            batch = batch.to(device)
            with acc.autocast() if acc is not None else nullcontext():
                feats = live(batch)
            for lay in cp.layouts:
                for row, values in zip(batch.rows.tolist(), _rows_of(feats, lay)):
                    entry.write(row, lay.name, values.numpy())
            done += batch.size
            progress.update(done)
    entry.flush()
    if not shared:
        return entry
    _barrier(acc)
    if rank == 0:
        _finalise(cp, tmp)
        lock.close()
    _barrier(acc)
    return Entry.open(cp, verify=False)


def _lock(cp: CachePlan):
    import fcntl

    f = open(cp.root / f"{cp.key}.lock", "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _finalise(cp: CachePlan, tmp: Path) -> None:
    checksums = {lay.name: _checksum(tmp / f"{lay.name}.npy") for lay in cp.layouts}
    manifest = {"identity": cp.identity, "checksums": checksums, "bytes": cp.bytes, "created": time.time(),
                "layouts": [vars(lay) for lay in cp.layouts]}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (tmp / "last_used").touch()
    shutil.rmtree(cp.path, ignore_errors=True)  # a damaged entry being rebuilt
    os.replace(tmp, cp.path)


def _barrier(acc) -> None:
    if acc is not None and acc.num_processes > 1:
        acc.wait_for_everyone()


def open_or_fill(cp: CachePlan, live, encoded, collate, batch_size: int, acc) -> Entry:
    """The entry for this run: read it when it is there and sound, else (re)build it."""
    from brewcli.ui import console

    if cp.mode == "disk" and (cp.path / "manifest.json").exists():
        try:
            entry = Entry.open(cp)
            if acc is None or acc.is_main_process:
                console.print(f"teacher cache hit: {cp.path}")
            return entry
        except CacheDamaged as e:
            _barrier(acc)
            if acc is None or acc.is_main_process:
                console.print(f"[yellow]note:[/yellow] the teacher cache entry {cp.path} is damaged ({e}); "
                              "rebuilding it")
                shutil.rmtree(cp.path, ignore_errors=True)
            _barrier(acc)
    return fill(cp, live, encoded, collate, batch_size, acc)


class CachedTeacher:
    """A teacher source that reads stored features for `batch.rows` and pads them to the batch, as Features."""

    def __init__(self, entry: Entry, device, name: str | None = None):
        self.entry, self.device, self.name = entry, device, name

    def __call__(self, batch):
        from brewcli.batch import Features

        mask = batch.for_teacher(self.name)["attention_mask"]
        keep = mask.bool().cpu()
        rows = batch.rows.tolist()
        b, length = keep.shape
        feats = Features(mask=mask)
        for lay in self.entry.layouts:
            if lay.kind == "seq":
                out = torch.zeros(b, lay.width)
            elif lay.kind == "tok":
                out = torch.zeros(b, length, lay.width)
            else:
                out = torch.zeros(b, lay.width, length, length)
            for i, row in enumerate(rows):
                values = torch.from_numpy(np.array(self.entry.read(row, lay), dtype=np.float32))
                if lay.kind == "seq":
                    out[i] = values
                elif lay.kind == "tok":
                    out[i, keep[i]] = values
                else:
                    pos = keep[i].nonzero().squeeze(-1)
                    out[i][:, pos[:, None], pos[None, :]] = values
            out = out.to(self.device, non_blocking=True)
            if lay.name == "logits":
                feats.logits = out
            else:
                kind, k = lay.name.split(".")
                getattr(feats, kind)[int(k)] = out
        return feats


# ---------------------------------------------------------------------------------------------- brew cache ls / rm


def entries(root: Path) -> list[dict]:
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")):
        m = _manifest(folder)
        ident = m.get("identity", {})
        used = folder / "last_used"
        out.append({"key": folder.name, "teacher": ident.get("teacher"), "data": ident.get("data"),
                    "task": ident.get("task"), "features": ident.get("features"), "rows": ident.get("rows"),
                    "max_length": ident.get("max_length"), "dtype": ident.get("dtype"),
                    "bytes": sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
                    "last_used": used.stat().st_mtime if used.exists() else None, "path": str(folder),
                    "complete": bool(m)})
    return out


def remove(root: Path, keys: list[str], everything: bool) -> list[str]:
    found = entries(root)
    if everything:
        chosen = [e["key"] for e in found]
    else:
        chosen = []
        for k in keys:
            match = [e["key"] for e in found if e["key"].startswith(k)]
            if len(match) != 1:
                from brewcli.errors import did_you_mean

                what = "no entry" if not match else f"{len(match)} entries"
                hint = did_you_mean(k, [e["key"] for e in found])
                raise BrewError(f"brew cache rm: {what} in {root} start with '{k}'" + (f"; {hint}" if hint else "")
                                + "; see brew cache ls")
            chosen += match
    for k in chosen:
        shutil.rmtree(root / k)
    for stale in (p for p in root.glob("*.tmp") if everything):
        shutil.rmtree(stale, ignore_errors=True)
    return chosen
