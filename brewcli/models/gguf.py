"""A teacher in a GGUF file (`teacher: {model: FOLDER, gguf_file: NAME}`), made a plain Hugging Face folder once.

transformers reads GGUF files (dequantising them to full precision) but its models loaded that way cannot be saved,
and reading one takes half a minute. So the first plan that names a GGUF teacher checks the file (that it is GGUF,
and a decoder transformers can read) before any weights load, then converts it into a content-addressed folder under
the cache (`<cache>/gguf/<key>/`: config, safetensors, tokenizer); every later plan, run, cache key and `brew eval`
reads that folder like any other teacher.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from brewcli.errors import RecipeError, did_you_mean, doing

# GGUF's general.architecture values of the decoder families transformers reads from GGUF files
DECODERS = ("llama", "mistral", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gpt2", "phi3", "gemma", "gemma2", "gemma3",
            "falcon", "stablelm", "starcoder2", "mamba", "nemotron", "bloom", "deci", "lfm2")


def architecture(path: Path, key: str) -> str:
    """The file's general.architecture; an error naming `key` for a file that is not GGUF."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise RecipeError(key, "reading a GGUF file needs the gguf package", "pip install 'brewcli[lm]'") from None
    try:
        field = GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except Exception as e:  # gguf raises ValueError, KeyError or struct errors on another kind of file
        raise RecipeError(key, f"{path} is not a GGUF model file ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                          "name the .gguf file that holds the model") from None


def check(folder: str, name: str, key: str) -> tuple[Path, str]:
    """(the GGUF file, its architecture), checked without loading weights."""
    where = Path(folder).expanduser()
    if not where.is_dir():
        raise RecipeError(f"{key}.model", f"folder not found: {folder} (with gguf_file, model is the folder holding it)")
    path = where / name
    if not path.is_file():
        found = sorted(p.name for p in where.glob("*.gguf"))
        raise RecipeError(f"{key}.gguf_file", f"no file '{name}' in {where}" + (f" (GGUF files there: "
                          f"{', '.join(found)})" if found else " (it holds no .gguf file)"),
                          did_you_mean(name, found) if found else None)
    arch = architecture(path, f"{key}.gguf_file")
    if arch not in DECODERS:
        raise RecipeError(f"{key}.gguf_file", f"{name} holds a '{arch}' model, not a decoder that transformers reads "
                          f"from GGUF ({', '.join(DECODERS[:8])}, ...)", did_you_mean(arch, DECODERS))
    return path, arch


def converted(folder: str, name: str, key: str, cache_root: Path) -> str:
    """The Hugging Face folder of the GGUF teacher (converted on first use), as a path string."""
    path, arch = check(folder, name, key)
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_root / "gguf" / f"{path.stem}-{digest}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return str(out)
    doing(f"converting the GGUF teacher {name} ({arch}) to a Hugging Face folder, once")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from brewcli.models.hf import plain, quiet_transformers

    quiet_transformers()
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(plain(loaded.config))  # a GGUF-loaded model refuses save_pretrained
    model.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"converted by brew from {path.resolve()}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def resolve(recipe):
    """The recipe with each GGUF teacher's model replaced by its converted folder (and gguf_file dropped)."""
    teachers = recipe.teacher if isinstance(recipe.teacher, list) else [recipe.teacher] if recipe.teacher else []
    if not any(t.gguf_file for t in teachers):
        return recipe
    from brewcli.cache import default_root

    root = Path(recipe.distill.cache_dir).expanduser() if recipe.distill.cache_dir else default_root()
    several = isinstance(recipe.teacher, list)
    new = [t.model_copy(update={"model": converted(t.model, t.gguf_file, f"teacher[{i}]" if several else "teacher",
                                                   root), "gguf_file": None}) if t.gguf_file else t
           for i, t in enumerate(teachers)]
    return recipe.model_copy(update={"teacher": new if several else new[0]})
