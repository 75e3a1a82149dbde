"""On-policy distillation (`distill.on_policy`): a share of the training batches trains on text the student writes.

In those batches each row keeps its prompt (a window: its first half) and the student samples the rest, as many
tokens as the text it replaces (GKD, Agarwal et al. 2024; what TRL, NeMo RL and verl moved to). The teacher then
scores the student's own continuation, and KD pulls the student's next-token distributions towards the teacher's
on it, so the student learns from the mistakes it makes rather than only from text it never wrote. The sampled
tokens are no gold labels: those rows are teacher-only, and the hard-label loss skips them.

Which batches, and the sampling, are drawn from the run's seed, the step and the micro-batch, on an RNG of their
own: a resumed run samples the same continuations, and the rest of the run draws what it would without them.
Generation is token by token, so on a CPU such a batch costs several times an ordinary one (README).
"""

from __future__ import annotations

import random

from brewcli.lazy import torch


class OnPolicy:
    def __init__(self, share: float, seed: int, task, tokenizer, multiple: int | None = None):
        self.share, self.seed, self.task, self.tokenizer, self.multiple = share, seed, task, tokenizer, multiple

    def chosen(self, step: int, micro: int) -> bool:
        return random.Random(f"{self.seed}:{step}:{micro}").random() < self.share

    def __call__(self, batch, model, step: int, micro: int):
        """The batch, or (when drawn) the batch with the student's own continuations in it."""
        if not self.chosen(step, micro):
            return batch
        device = batch.mask.device
        was_training = model.training
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(random.Random(f"{self.seed}:{step}:{micro}:sample").getrandbits(63))
            model.eval()
            try:
                return self.task.rollout(batch, model, self.tokenizer, self.multiple)
            finally:
                model.train(was_training)
