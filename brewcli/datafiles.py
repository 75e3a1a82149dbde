"""Local data files, checked before `datasets` reads them: encoding, CSV fields, JSON syntax, empty files.

Each check reads the file once as a stream and remembers the line where every record starts, so a later
problem with a value (a missing label, a word where a number belongs) can name the file and line.
"""

from __future__ import annotations

import codecs
import csv
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from brewcli.errors import RecipeError

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class FileRows:
    """Where the records of one file start: `lines[i]` is the line of record i (None: records are counted)."""

    path: Path
    count: int
    columns: list[str]
    lines: array | None = None

    def where(self, i: int) -> str:
        return f"{self.path.name} line {self.lines[i]}" if self.lines is not None else f"{self.path.name} record {i + 1}"


def locate(files: list[FileRows] | None, index: int, split: str) -> str:
    """A row of a split, named by file and line when the split came from local files."""
    for f in files or ():
        if index < f.count:
            return f.where(index)
        index -= f.count
    return f"row {index + 1} of the {split} split"


def check_path(path: str | Path, key: str) -> None:
    """A data path names a file that is there: not a folder, not missing."""
    p = Path(path)
    if p.is_dir():
        raise RecipeError(key, f"{path} is a folder, expected a file (CSV, TSV, JSON, JSON Lines or Parquet)",
                          "name the file itself, e.g. " + str(next((f for f in sorted(p.iterdir())
                                                                     if f.suffix.lower() in FORMATS), p / "train.csv")))
    if not p.is_file():
        raise RecipeError(key, f"file not found: {path}")


def check_file(path: str, key: str) -> FileRows:
    p = Path(path)
    check_path(p, key)
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise RecipeError(key, f"cannot read '{path}': brew reads {', '.join(FORMATS)} files",
                          "export it as CSV or JSON Lines")
    if p.stat().st_size == 0:
        raise RecipeError(key, f"{path} is empty")
    rows = {"csv": _csv, "json": _json, "parquet": _parquet}[kind](p, key)
    if rows.count == 0:
        raise RecipeError(key, f"{path} has no rows" + (" (only a header)" if kind == "csv" else ""))
    return rows


def _lines(path: Path, key: str) -> Iterator[str]:
    """The file's lines as text; a byte that is not UTF-8 is reported with its line and column."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RecipeError(key, f"{path.name} line {n} is not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                                  f"column {e.start + 1})", "save the file as UTF-8") from None


def _csv(path: Path, key: str) -> FileRows:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(_lines(path, key), delimiter=delimiter, strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            raise RecipeError(key, f"{path} is empty")
        if delimiter == "\t" and len(header) == 1 and "," in header[0]:
            raise RecipeError(key, f"{path.name} line 1 has commas but no tab: it is comma-separated, but a .tsv file "
                              "is read as tab-separated", f"rename it to {path.with_suffix('.csv').name}")
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise RecipeError(key, f"{path.name} line 1: column '{repeated[0]}' appears more than once in the header")
        lines, start = array("l"), reader.line_num + 1
        for row in reader:
            if row:  # blank lines are skipped, as pandas does
                if len(row) != len(header):
                    raise RecipeError(key, f"{path.name} line {start} has {len(row)} fields but the header has "
                                      f"{len(header)} ({', '.join(header[:6])})",
                                      "quote fields that contain the delimiter or a line break")
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise RecipeError(key, f"{path.name} line {start} opens a quote that is never closed",
                              "a field that starts with \" must end with \"") from None
        raise RecipeError(key, f"{path.name} line {reader.line_num} is not valid CSV ({e})",
                          "check the quotes: a field that starts with \" must end with \"") from None
    return FileRows(path, len(lines), header, lines)


def _json(path: Path, key: str) -> FileRows:
    """A JSON list of records, or JSON Lines (one object per line; datasets reads both from .json and .jsonl)."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"["):
        text = "".join(_lines(path, key))
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecipeError(key, f"{path.name} line {e.lineno} is not valid JSON ({e.msg} at column {e.colno})") \
                from None
        bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
        if bad is not None:
            raise RecipeError(key, f"{path.name} record {bad + 1} is a {type(records[bad]).__name__}, not an object "
                              "with one key per column")
        for i, r in enumerate(records):
            _check_numbers(r, f"{path.name} record {i + 1}", key)
        return FileRows(path, len(records), sorted({k for r in records for k in r}))
    lines, columns = array("l"), set()
    for n, line in enumerate(_lines(path, key), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            hint = ("brew reads a JSON list of records or JSON Lines (one object per line), not one nested object"
                    if n == 1 and line.strip() == "{" else None)
            raise RecipeError(key, f"{path.name} line {n} is not valid JSON ({e.msg} at column {e.colno})",
                              hint) from None
        if not isinstance(record, dict):
            raise RecipeError(key, f"{path.name} line {n} is a {type(record).__name__}, not an object with one key "
                              "per column", "write one JSON object per line")
        _check_numbers(record, f"{path.name} line {n}", key)
        lines.append(n)
        columns.update(record)
    return FileRows(path, len(lines), sorted(columns), lines)


def _check_numbers(record: dict, where: str, key: str) -> None:
    """Whole numbers fit in 64 bits (Arrow's widest integer); a larger one stops datasets without naming its row."""
    for field, value in record.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and not -2**63 <= v < 2**63:
                raise RecipeError(key, f"{where}: field '{field}' holds the whole number {str(v)[:24]}..., larger than "
                                  "64 bits can hold", "write it as a string (in quotes) or a decimal")


def _parquet(path: Path, key: str) -> FileRows:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
        return FileRows(path, meta.metadata.num_rows, list(meta.schema_arrow.names))
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a damaged file
        raise RecipeError(key, f"{path.name} is not a readable Parquet file ({str(e).splitlines()[0][:160]})") \
            from None
