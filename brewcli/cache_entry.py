"""A teacher-cache entry on disk (or in memory): writing it in one teacher pass, checking it, reading it.

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

from brewcli.cache import DTYPES, CachePlan, Layout, keyed, lock_path, read_manifest
from brewcli.errors import BrewError, doing
from brewcli.lazy import np, torch

CHECK_BLOCK, CHECK_BLOCKS = 1 << 20, 16  # files larger than 16 MiB: 16 blocks of 1 MiB are checksummed


class CacheDamaged(BrewError):
    pass


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
        for lay in cp.layouts:
            n, dtype = int(e.offsets[lay.name][-1]), lay.dtype or DTYPES[cp.dtype]
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
        saved, problem = read_manifest(folder) if mode == "r" else ({}, None)
        if problem:
            raise CacheDamaged(problem)
        if mode == "r" and keyed(saved["identity"]) != keyed(cp.identity):
            raise CacheDamaged("its manifest.json does not match this run")
        try:
            lengths = np.load(folder / "lengths.npy")
            if lengths.shape != cp.lengths.shape or not np.array_equal(lengths, cp.lengths):
                raise CacheDamaged("its row lengths (lengths.npy) do not match the data")
            e = cls(cp.layouts, lengths)
            for lay in cp.layouts:
                path = folder / f"{lay.name}.npy"
                if verify and mode == "r" and _checksum(path) != saved["checksums"].get(lay.name):
                    raise CacheDamaged(f"{path.name} does not match its checksum")
                e.arrays[lay.name] = np.load(path, mmap_mode=mode if mode == "r" else "r+")
                if e.arrays[lay.name].shape != (int(e.offsets[lay.name][-1]),) or \
                        e.arrays[lay.name].dtype != (lay.dtype or DTYPES[cp.dtype]):
                    raise CacheDamaged(f"{path.name} has the wrong size or type")
        except (OSError, ValueError, EOFError) as err:  # a missing, empty or truncated .npy
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
    from brewcli.models.features import parse_name

    return features.at(*parse_name(name))


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

    n = len(cp.lengths)
    rank, world = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    tmp = cp.path.with_suffix(".tmp")
    shared = cp.mode == "disk"
    lock = None
    if shared:
        if rank == 0:
            lock = _lock(cp)  # held until the entry is in place: a second run of the same key waits, then reads it
            if not (cp.path / "manifest.json").exists():
                _clear(tmp)  # a fill that was interrupted
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

    report = _FillReport(cp, n, len(mine), world if shared else 1, enabled=rank == 0)
    device = acc.device if acc is not None else torch.device("cpu")
    # the loader draws a seed from the global RNG: keep it untouched, so a run trains the same with or without a fill
    with report.progress, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in data_mod.loader(encoded, collate, batch_size, mine):
            batch = batch.to(device)
            with acc.autocast() if acc is not None else nullcontext():
                feats = live(batch)
            for lay in cp.layouts:
                for row, values in zip(batch.rows.tolist(), _rows_of(feats, lay)):
                    entry.write(row, lay.name, values.numpy())
            report.update(batch.size)
    entry.flush()
    if not shared:
        report.finish()
        return entry
    _barrier(acc)
    if rank == 0:
        _finalise(cp, tmp)
        lock.close()
    _barrier(acc)
    report.finish()
    return Entry.open(cp, verify=False)


FILL_LINE_EVERY = 30.0  # seconds between the fill's progress lines when there is no terminal (logs, CI)


class _FillReport:
    """What a fill tells the user (on process 0): a line when it starts and when it ends, and in between a progress
    bar on a terminal (rows done of this process's share, rows/s) or a line every FILL_LINE_EVERY seconds."""

    def __init__(self, cp: CachePlan, rows: int, share: int, processes: int, enabled: bool):
        from brewcli.ui import Progress, console

        self.console, self.enabled, self.rows, self.share, self.done = console, enabled, rows, share, 0
        self.what = f"the teacher cache for {cp.identity.get('teacher', 'the teacher')}"
        self.where = "in memory" if cp.mode == "memory" else str(cp.path)
        self.progress = Progress(share, 0, enabled=enabled, description="teacher cache")
        self.started = self.last_line = time.perf_counter()
        each = f", {share} on this process" if processes > 1 else ""
        self._say(f"filling {self.what}: {rows} rows{each}, one teacher pass ({self.where})")

    def _say(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, soft_wrap=True)

    def rate(self, rows: int | None = None) -> float:
        return (self.done if rows is None else rows) / max(time.perf_counter() - self.started, 1e-9)

    def update(self, rows: int) -> None:
        self.done += rows
        self.progress.update(self.done, info=f"{self.rate():.1f} rows/s")
        now = time.perf_counter()
        if not self.progress.on_terminal and now - self.last_line >= FILL_LINE_EVERY and self.done < self.share:
            self.last_line = now
            self._say(f"teacher cache: {self.done}/{self.share} rows, {self.rate():.1f} rows/s")

    def finish(self) -> None:  # after every process's share is in: all the rows, at the rate of all processes
        self._say(f"filled {self.what}: {self.rows} rows in {time.perf_counter() - self.started:.1f} s "
                  f"({self.rate(self.rows):.1f} rows/s), {self.where}")


def _lock(cp: CachePlan):
    import fcntl

    f = open(lock_path(cp.root, cp.key), "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _finalise(cp: CachePlan, tmp: Path) -> None:
    checksums = {lay.name: _checksum(tmp / f"{lay.name}.npy") for lay in cp.layouts}
    saved = {"identity": cp.identity, "checksums": checksums, "bytes": cp.bytes, "created": time.time(),
             "layouts": [vars(lay) for lay in cp.layouts]}
    (tmp / "manifest.json").write_text(json.dumps(saved, indent=1))
    (tmp / "last_used").touch()
    _clear(cp.path)  # a damaged entry being rebuilt
    os.replace(tmp, cp.path)


def _clear(path: Path) -> None:
    """Remove what is at `path`: an entry folder, or a file someone left under the entry's name."""
    if path.is_file() or path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


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
                _clear(cp.path)
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
        prefix = (keep.cumsum(1) == torch.arange(1, length + 1)).sum(1) == keep.sum(1)  # rows kept from position 0
        feats = Features(mask=mask)
        for lay in self.entry.layouts:
            if lay.kind == "seq":
                out = torch.zeros(b, lay.width)
            elif lay.kind == "tok":
                out = torch.zeros(b, length, lay.width)
            else:
                out = torch.zeros(b, lay.width, length, length)
            for i, row in enumerate(rows):
                # a fresh float32 copy of the row: the conversion copy .float() made anyway, and writable, so
                # torch does not warn about the read-only memory map (the entry itself is never copied)
                values = torch.from_numpy(self.entry.read(row, lay).astype(np.float32))
                if lay.kind == "seq":
                    out[i] = values
                elif lay.kind == "tok" and prefix[i]:  # right padding: the row's tokens come first
                    out[i, :len(values)] = values
                elif lay.kind == "tok":
                    out[i, keep[i]] = values
                else:
                    pos = keep[i].nonzero().squeeze(-1)
                    out[i][:, pos[:, None], pos[None, :]] = values
            out = out.to(self.device, non_blocking=True)
            if lay.name == "logits":
                feats.logits = out
            else:
                from brewcli.models.features import parse_name

                feats.put(*parse_name(lay.name), out)
        return feats


