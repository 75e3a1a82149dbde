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


def _not_utf8(path: Path, key: str, line: int, byte: int, column: int) -> RecipeError:
    return RecipeError(key, f"{path.name} line {line} is not UTF-8 text (byte 0x{byte:02x} at column {column})",
                       "save the file as UTF-8")


def _lines(path: Path, key: str) -> Iterator[str]:
    """The file's lines as text; a byte that is not UTF-8 is reported with its line and column."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, key, n, raw[e.start], e.start + 1) from None


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


# ---------------------------------------------------------------------------------------------- plain text

TEXT = {".txt": "plain text"}  # read by datasets' text builder, for a task that lists the suffix (task: general)
SAMPLE_BYTES = 4_000_000  # what a dry run reads of a split's text files; also where `documents: auto` looks
_CHUNK = 16 * 2**20


@dataclass
class TextSample:
    """The first documents of a text file: what a dry run reads instead of the whole file."""

    path: Path
    size: int  # the file's bytes
    read: int  # the bytes the documents cover (whole documents: cut at a line or paragraph end)
    documents: str  # lines | paragraphs
    texts: list[str]


def _head(path: Path, budget: int) -> tuple[bytes, int]:
    """The first `budget` bytes of a file without a UTF-8 byte-order mark, and the mark's length (0 or 3)."""
    with open(path, "rb") as f:
        head = f.read(budget)
    bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    return head[bom:], bom


def _documents(head: bytes, documents: str) -> str:
    """`documents: auto`: paragraphs when the text has an empty line (as datasets splits them: two line ends in a
    row), else one document per line."""
    if documents != "auto":
        return documents
    return "paragraphs" if b"\n\n" in head.replace(b"\r\n", b"\n").replace(b"\r", b"\n") else "lines"


def _check_text_head(path: Path, key: str, head: bytes, bom: int, size: int) -> None:
    if size == 0 or (bom + len(head) >= size and not head.strip()):
        raise RecipeError(key, f"{path.name} has no text" + (" (it is empty)" if size == 0 else " (only blank lines)"),
                          "point at the corpus file, with a document per line or paragraphs split by empty lines")


def _check_utf8(data: bytes, path: Path, key: str, line: int = 1) -> None:
    """`data` (starting at line `line`, at the start of a line) decodes as UTF-8; else the first bad byte's line."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        raise _not_utf8(path, key, line + data.count(b"\n", 0, e.start), data[e.start], e.start - start + 1) from None


def check_text(path: str | Path, key: str, documents: str = "auto") -> str:
    """A whole text file before datasets reads it: not empty, UTF-8 throughout (read in chunks, decoded at C speed).
    Returns how it splits into documents: lines or paragraphs."""
    p = Path(path)
    check_path(p, key)
    size = p.stat().st_size
    head, bom = _head(p, SAMPLE_BYTES)
    _check_text_head(p, key, head, bom, size)
    line, rest = 1, b""
    with open(p, "rb") as f:
        first = True
        while chunk := f.read(_CHUNK):
            if first and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8):]
            first = False
            data = rest + chunk
            cut = data.rfind(b"\n") + 1  # check whole lines; the rest goes with the next chunk
            _check_utf8(data[:cut], p, key, line)
            line += data.count(b"\n", 0, cut)
            rest = data[cut:]
    _check_utf8(rest, p, key, line)
    return _documents(head, documents)


def _whole_characters(data: bytes) -> int:
    """The length of `data` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0xC0:  # the lead byte of the last character: does the character end in `data`?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if need > back else len(data)
        if byte & 0x80 == 0:  # ASCII
            return len(data)
    return len(data)


def split_documents(text: str, documents: str) -> list[str]:
    """Documents as datasets' text builder makes them (sample_by line or paragraph, universal line ends)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if documents == "paragraphs":
        return [p for p in text.split("\n\n") if p]
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def sample_text(path: str | Path, key: str, documents: str = "auto", budget: int = SAMPLE_BYTES) -> TextSample:
    """The documents in the first `budget` bytes of a text file (cut after the last whole one), checked: not empty,
    UTF-8. Nothing past `budget` is read."""
    p = Path(path)
    check_path(p, key)
    size = p.stat().st_size
    head, bom = _head(p, max(budget, SAMPLE_BYTES))
    _check_text_head(p, key, head, bom, size)
    mode = _documents(head, documents)  # on the same bytes as check_text, whatever the budget
    head = head[:budget - bom]
    if bom + len(head) < size:  # the file goes on: end at a document's end
        cut = head.rfind(b"\n\n") + 2 if mode == "paragraphs" and b"\n\n" in head else head.rfind(b"\n") + 1
        head = head[:cut] if cut > 0 else head[:_whole_characters(head)]  # else one line longer than the budget
    _check_utf8(head, p, key)
    return TextSample(p, size, bom + len(head), mode, split_documents(head.decode("utf-8"), mode))
