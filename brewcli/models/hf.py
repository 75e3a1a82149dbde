"""Build Hugging Face configs, models and tokenizers. No training logic here."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from brewcli import hub
from brewcli.errors import RecipeError, read_text


def quiet_transformers() -> None:
    """Before transformers reads or builds a model: its logging quiet, brew's own model types registered."""
    from transformers.utils import logging

    from brewcli.models.bigru import register

    register()
    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_config(ref: str, key: str, revision: str | None = None, trust_remote_code: bool = False):
    """AutoConfig for a local folder or a Hub id; a clear error naming `key` when it cannot be found or read."""
    from transformers import AutoConfig

    quiet_transformers()
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise RecipeError(key, f"'{ref}' is a file; give the model's folder (the one holding config.json)")
        _check_config_json(path / "config.json", ref, key)
        try:
            return plain(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
        except Exception as e:  # transformers raises many types for a config it cannot read
            raise RecipeError(key, f"{path / 'config.json'} is not a config transformers can read "
                              f"({str(e).splitlines()[0][:200]})") from None
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or os.sep + os.sep in ref:
        raise RecipeError(key, f"folder not found: {ref}")
    hub.unreachable()  # offline: fail now instead of after half a minute of retries
    try:
        return AutoConfig.from_pretrained(ref, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RecipeError(key, hub.not_found(ref, "model", e)) from None


def plain(config):
    """The config without a GGUF `quantization_config`: a folder brew converted from a GGUF file (or a student built
    from one) holds plain float weights, but transformers treats a model whose config names GGUF as quantized and
    refuses to save it."""
    q = getattr(config, "quantization_config", None)
    method = q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)
    if method == "gguf":
        del config.quantization_config
    return config


def _check_config_json(file: Path, ref: str, key: str) -> None:
    if not file.is_file():
        raise RecipeError(key, f"'{ref}' has no config.json, so it is not a Hugging Face model folder")
    try:
        config = json.loads(read_text(file))
    except RecipeError as e:  # not UTF-8
        raise RecipeError(key, f"{e.key} {e.message}") from None
    except json.JSONDecodeError as e:
        raise RecipeError(key, f"{file}:{e.lineno} is not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise RecipeError(key, f"{file} has no model_type, so transformers cannot tell which model it describes")


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_weights(ref: str, key: str) -> None:
    """A local model folder must hold weights that can be opened (headers only: cheap, before any load)."""
    path = Path(ref).expanduser()
    if not path.is_dir():
        return  # a Hub id: transformers fetches and checks it
    found = [f for f in WEIGHT_FILES if (path / f).is_file()]
    if not found:
        raise RecipeError(key, f"'{ref}' holds a config but no weights (none of {', '.join(WEIGHT_FILES)})",
                          "point at the folder save_pretrained wrote")
    if found[0] == "model.safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path / found[0]), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error types for a damaged header
            raise RecipeError(key, f"{path / found[0]} is damaged and cannot be read ({str(e).splitlines()[0][:160]})",
                              "save the model again") from None


def architectures(config) -> list[str]:
    """The model classes a config names (config.json's `architectures`, read leniently: a string, or junk)."""
    archs = getattr(config, "architectures", None)
    archs = [archs] if isinstance(archs, str) else archs if isinstance(archs, list) else []
    return [a for a in archs if isinstance(a, str)]


def max_positions(config) -> int | None:
    """How many tokens the model reads (see families.py); a family brew does not know: its max_position_embeddings."""
    from brewcli.models.families import FamilyError, read_widths

    try:
        return read_widths(config).max_positions
    except FamilyError:
        return getattr(config, "max_position_embeddings", None)


def meta_model(config, cls):
    """The model a config describes (`cls`: a transformers Auto class), built on the meta device: shapes and
    parameter counts, no memory, no weights."""
    import torch

    quiet_transformers()
    with torch.device("meta"):
        return cls.from_config(config)


def load_pretrained(ref: str, config, cls, revision=None, trust_remote_code=False, attention: str | None = None):
    """The model at ref with the plan's config (a head the plan resized starts afresh), or with the folder's own
    config where `config` is None (a saved run, loaded as saved). The config is copied: a kernel choice stays with
    this model."""
    quiet_transformers()
    path = Path(ref).expanduser()
    exact = config is None  # a saved run: every weight as saved
    if exact and path.is_dir():
        from transformers import AutoConfig

        config = plain(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))
    config = copy.deepcopy(config)
    return cls.from_pretrained(
        path if path.exists() else ref, config=config, revision=revision, trust_remote_code=trust_remote_code,
        ignore_mismatched_sizes=not exact, **({"attn_implementation": attention} if attention else {}),
    )


def from_config(config, cls, attention: str | None = None):
    quiet_transformers()
    config = copy.deepcopy(config)
    return cls.from_config(config, **({"attn_implementation": attention} if attention else {}))


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "spm.model")


def load_tokenizer(ref: str, key: str, revision=None, trust_remote_code=False):
    from transformers import AutoTokenizer

    path = Path(ref).expanduser()
    if path.is_dir() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise RecipeError(key, f"'{ref}' has no tokenizer files (none of {', '.join(TOKENIZER_FILES[:4])}, ...); "
                          "without them transformers builds an empty tokenizer and every word becomes [UNK]",
                          "save the tokenizer beside the model (tokenizer.save_pretrained)")
    try:
        tok = AutoTokenizer.from_pretrained(path if path.exists() else ref, revision=revision,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        message = hub.not_found(ref, "tokenizer", e) if not path.exists() else \
            f"could not load a tokenizer from '{ref}' ({str(e).splitlines()[0][:160]})"
        raise RecipeError(key, message) from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token  # decoders (GPT-2, Llama) have no padding token; padding is masked anyway
    if tok.pad_token is None:
        raise RecipeError(key, f"the tokenizer of '{ref}' has no padding token, so batches cannot be padded")
    return tok


def size_on_disk(folder: Path) -> int:
    """The model's weights on disk: safetensors, or an export's ONNX files (with their external data)."""
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.onnx", "*.onnx.data")
               for f in Path(folder).glob(pattern))
