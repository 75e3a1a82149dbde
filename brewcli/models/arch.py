"""Architectures: one kind of model behind one small interface, registered by name (`brew ls archs`).

An arch turns a config into a model with a task's head (the task names the head: `sequence`, `token`, `span` or
`none`; the arch maps it to a class), loads one, builds a weight-free copy on the meta device (shapes and parameter
counts at plan time), reads its widths, runs it to the `Features` the loss terms ask for, and saves it where its own
library loads it again. `hf` serves every Hugging Face family that families.py knows (and any other `transformers`
model for what needs no family knowledge). A new kind of student (a BiGRU, say) is a second `ARCHS.add`; the plan,
the loop and the scoring call it through this interface.
"""

from __future__ import annotations

from typing import Protocol

from brewcli.registry import Registry

HEADS = ("sequence", "token", "span", "lm", "none")


class Arch(Protocol):
    name: str

    def has_head(self, config, head: str) -> bool:
        """The config's saved model was trained with this head (its logits mean something)."""

    def head_name(self, head: str) -> str:
        """What the head is called in this arch, for the plan (hf: its class, ForSequenceClassification)."""

    def serves(self, config, head: str) -> bool:
        """A model of this config can be built with this head at all (a causal-LM head needs a decoder family)."""

    def build(self, config, head: str, attention: str | None = None):
        """A new model with random weights."""

    def load(self, ref: str, config, head: str, revision: str | None = None, trust_remote_code: bool = False,
             attention: str | None = None):
        """The saved model at `ref` (a folder or a Hub id), with the plan's config, or as saved (config None)."""

    def meta(self, config, head: str):
        """The model on the meta device: its shapes and parameter counts, without memory or weights."""

    def widths(self, config):
        """Its sizes (families.Widths): layers, hidden, heads, ... whatever the config calls them."""

    def run(self, model, inputs: dict, needs, task, labels: dict | None = None):
        """One forward pass computing only what `needs` asks for, as batch.Features."""

    def save(self, model, folder) -> None:
        """Write the weights and config where `load` (and the arch's own library) reads them again."""

    def outputs(self, head: str) -> tuple[str, ...]:
        """The names of what the model gives for a head, in the order an export returns them."""

    def export(self, model, path, inputs: dict, head: str, opset: int) -> None:
        """Write the model (in eval mode) as ONNX at `path`, with dynamic batch and sequence axes; `inputs` is a
        real batch of model inputs (at least two rows and two tokens)."""


class HFArch:
    """Hugging Face `transformers` models: `AutoModelFor<head>` classes, safetensors folders that plain
    `from_pretrained` loads."""

    name = "hf"
    classes = {"sequence": "AutoModelForSequenceClassification", "token": "AutoModelForTokenClassification",
               "span": "AutoModelForQuestionAnswering", "lm": "AutoModelForCausalLM",
               "none": "AutoModel"}

    def head_class(self, head: str):
        import transformers

        return getattr(transformers, self.classes[head])

    def head_name(self, head: str) -> str:
        return self.classes[head].removeprefix("AutoModel") or "AutoModel"

    def serves(self, config, head: str) -> bool:
        if head != "lm":
            return True
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    def has_head(self, config, head: str) -> bool:
        from brewcli.models.hf import architectures

        if head == "none":
            return True
        suffixes = (self.head_name(head),) + (("LMHeadModel",) if head == "lm" else ())  # GPT2LMHeadModel
        return any(a.endswith(suffixes) for a in architectures(config))

    def build(self, config, head, attention=None):
        from brewcli.models.hf import from_config

        return from_config(config, self.head_class(head), attention)

    def load(self, ref, config, head, revision=None, trust_remote_code=False, attention=None):
        from brewcli.models.hf import load_pretrained

        return load_pretrained(ref, config, self.head_class(head), revision, trust_remote_code, attention)

    def meta(self, config, head):
        from brewcli.models.hf import meta_model

        return meta_model(config, self.head_class(head))

    def widths(self, config):
        from brewcli.models.families import read_widths

        return read_widths(config)

    def run(self, model, inputs, needs, task, labels=None):
        from brewcli.batch import run_model

        return run_model(model, inputs, needs, task, labels)

    def save(self, model, folder) -> None:
        model.save_pretrained(folder, safe_serialization=True)

    fields = {"sequence": ("logits",), "token": ("logits",), "span": ("start_logits", "end_logits"), "lm": ("logits",),
              "none": ("last_hidden_state",)}

    def outputs(self, head: str) -> tuple[str, ...]:
        return self.fields[head]

    def export(self, model, path, inputs, head, opset) -> None:
        from brewcli.export import torch_to_onnx

        torch_to_onnx(model, path, inputs, self.outputs(head), opset)


ARCHS: Registry[Arch] = Registry("arch", "archs")
ARCHS.add("hf", HFArch(), "Hugging Face transformers models (BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa, Llama-style "
                          "and others); saved as safetensors folders that plain from_pretrained loads")


def arch_of(config) -> Arch:
    """The arch a config's model belongs to: bigru for brew's own BiGRU, else hf."""
    return ARCHS.get("bigru" if getattr(config, "model_type", None) == "brew-bigru" else "hf")


import brewcli.models.bigru  # noqa: E402,F401 - registers "bigru"
