"""The teacher's top-k next-token distribution, in place of its vocabulary-wide logits (`distill.top_k`).

A causal LM's logits are a vocabulary per token (49,152 floats for SmolLM2): too much to cache, and most of it
is mass the loss barely feels. With `distill.top_k: K`, the teacher's output per token is reduced, on its device,
to its K most likely tokens at the KD temperature, their log-probabilities and the log of the mass left over
(DistillKit's scheme). KD then compares two distributions over K+1 buckets: those K tokens and one for every
other token. The student's buckets are its own log-probabilities of the same K tokens and the log of its
remaining mass, so its whole vocabulary still gets gradient (through the tail bucket).

- Forward KL on the buckets is DistillKit's: exact on the teacher's top K, plus the tail term
  p_rest_T * (log p_rest_T - log p_rest_S).
- Reverse KL, JSD, TVD and skew KL are computed on the same K+1 buckets: each is the divergence between the two
  coarsened distributions. That never exceeds the full-vocabulary value (data processing) and equals it when the
  K tokens hold all the teacher's mass. Where the student puts mass the teacher's top K does not name, these losses
  see it only as tail mass, not token by token.

The live teacher is reduced the same way, so a run reads the same target whether the teacher is cached or live.
"""

from __future__ import annotations

from dataclasses import dataclass

from brewcli.lazy import torch

FLOOR = -1e4  # log-probabilities are clamped here: an empty tail (K = vocabulary) stays finite, and 0 * log 0 = 0


@dataclass(frozen=True)
class TopK:
    k: int
    temperature: float

    @classmethod
    def of(cls, distill) -> TopK | None:
        return None if distill.top_k is None else cls(distill.top_k, distill.temperature)

    @property
    def width(self) -> int:
        """Floats per token: K log-probabilities, the tail's log-mass, K token ids (exact in float32)."""
        return 2 * self.k + 1

    def describe(self) -> str:
        return f"the teacher's top {self.k} tokens + the rest's mass ({self.k + 1} buckets)"

    def pack(self, logits):
        """(..., V) logits -> (..., 2K+1) float32: the top K log-probabilities at the temperature, the log of the
        rest's mass, and the K token ids."""
        logp = torch.log_softmax(logits.float() / self.temperature, dim=-1)
        top, ids = logp.topk(self.k, dim=-1)
        rest = _rest(logp, ids)
        return torch.cat([top.clamp_min(FLOOR), rest, ids.float()], dim=-1)

    def buckets(self, s_logits, packed):
        """(student, teacher) log-probabilities over the K+1 buckets, from the student's (N, V) logits and the
        teacher's packed (N, 2K+1). Both are normalised: any KD loss reads them at temperature 1."""
        ids = packed[..., self.k + 1:].long()
        logp = torch.log_softmax(s_logits.float() / self.temperature, dim=-1)
        mine = torch.cat([logp.gather(-1, ids).clamp_min(FLOOR), _rest(logp, ids)], dim=-1)
        return mine, packed[..., :self.k + 1]


def _rest(logp, ids):
    """log of the probability mass outside `ids`, per row; FLOOR when there is none. The named entries are set far
    below FLOOR rather than to -inf, which would make the gradient NaN when they are the whole vocabulary."""
    return logp.scatter(-1, ids, 2 * FLOOR).logsumexp(-1, keepdim=True).clamp_min(FLOOR)
