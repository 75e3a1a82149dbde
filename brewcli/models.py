"""Build Hugging Face configs, models and tokenizers. No training logic here."""

from __future__ import annotations

import os
from pathlib import Path

from brewcli.errors import RecipeError


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_config(ref: str, key: str, revision: str | None = None, trust_remote_code: bool = False):
    """AutoConfig for a local folder or a Hub id; a clear error naming `key` when it cannot be found."""
    from transformers import AutoConfig

    quiet_transformers()
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise RecipeError(key, f"'{ref}' has no config.json, so it is not a Hugging Face model folder")
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or os.sep + os.sep in ref:
        raise RecipeError(key, f"folder not found: {ref}")
    try:
        return AutoConfig.from_pretrained(ref, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RecipeError(key, f"'{ref}' is neither a local folder nor a model we could fetch from the Hugging "
                          f"Face Hub ({str(e).splitlines()[0][:160]})") from None


def set_labels(config, task, label_names: list[str] | None) -> None:
    if task.regression:
        config.num_labels, config.problem_type = 1, "regression"
        return
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {n: i for i, n in enumerate(label_names)}
    config.problem_type = "single_label_classification"


def has_task_head(config, task) -> bool:
    suffix = task.auto_class.removeprefix("AutoModel")  # e.g. ForSequenceClassification
    return any(a.endswith(suffix) for a in getattr(config, "architectures", None) or [])


def count_params(config, task) -> int:
    """Parameter count of the model a config describes, built on the meta device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        model = task.model_class().from_config(config)
    return sum(p.numel() for p in model.parameters())


def load_pretrained(ref: str, config, task, revision=None, trust_remote_code=False):
    quiet_transformers()
    path = Path(ref).expanduser()
    return task.model_class().from_pretrained(
        path if path.exists() else ref, config=config, revision=revision, trust_remote_code=trust_remote_code,
        ignore_mismatched_sizes=True,
    )


def from_config(config, task):
    quiet_transformers()
    return task.model_class().from_config(config)


def load_tokenizer(ref: str, key: str, revision=None, trust_remote_code=False):
    from transformers import AutoTokenizer

    path = Path(ref).expanduser()
    try:
        tok = AutoTokenizer.from_pretrained(path if path.exists() else ref, revision=revision,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as e:
        raise RecipeError(key, f"could not load a tokenizer from '{ref}' ({str(e).splitlines()[0][:160]})") from None
    if tok.pad_token is None:
        raise RecipeError(key, f"the tokenizer of '{ref}' has no padding token, so batches cannot be padded")
    return tok


def size_on_disk(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))
