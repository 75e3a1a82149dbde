"""A side: one model of a run (the student, or one teacher), resolved at plan time without weights.

It knows its arch, its config, the head the task gives it and where its weights come from, so everything after
the plan (building the models, the teacher cache, scoring at the end of a run) asks the side instead of
branching on who it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from brewcli.models.arch import ARCHS


@dataclass
class Side:
    name: str  # "student", or the teacher's name
    key: str  # its recipe key, for messages: `student`, `teacher`, or `teacher[1]` in a list
    config: object
    head: str  # the task's head (arch.HEADS)
    ref: str | None = None  # the folder or Hub id its weights load from; None: built (random or from teacher layers)
    revision: str | None = None
    trust_remote_code: bool = False
    arch_name: str = "hf"
    params: int | None = None
    tokenizer: object | None = None  # the tokenizer it reads
    own_tokens: bool = False  # a teacher that reads other tokens than the student: it gets its own batches
    embeddings: str | None = None  # a new BiGRU student: where its embedding table comes from (models/bigru.py)

    def encode(self, task, ds, names):
        """A split tokenised for this model, as the task encodes it."""
        return task.encode(ds, self.tokenizer, names)

    def collate(self, task, multiple: int | None = None):
        return task.collate(self.tokenizer, multiple)

    @property
    def arch(self):
        return ARCHS.get(self.arch_name)

    def meta(self):
        """This model on the meta device (shapes, parameter counts)."""
        return self.arch.meta(self.config, self.head)

    def widths(self):
        return self.arch.widths(self.config)

    def check_serves(self, task) -> None:
        """A plan-time error naming this side's key when its model cannot take the task's head at all."""
        if not self.arch.serves(self.config, self.head):
            from brewcli.errors import RecipeError

            raise RecipeError(self.key, f"a {getattr(self.config, 'model_type', self.arch_name)} model cannot take "
                              f"task '{task.name}''s head ({self.arch.head_name(self.head)})",
                              "use a decoder (GPT-2, Llama, Mistral, Qwen, ...)" if self.head == "lm" else None)

    def has_head(self) -> bool:
        return self.arch.has_head(self.config, self.head)

    def load(self, attention: str | None = None):
        """The model with its weights (from `ref`), or built from the config where it has none."""
        if self.ref is None:
            return self.arch.build(self.config, self.head, attention)
        return self.arch.load(self.ref, self.config, self.head, self.revision, self.trust_remote_code, attention)

    def run(self, model, inputs, needs, task, labels=None):
        return self.arch.run(model, inputs, needs, task, labels)
