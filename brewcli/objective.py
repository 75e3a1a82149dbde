"""The training objective: every loss term of a run, weighted and summed.

Distillers differ only by the terms they add: logit KD, hard labels, and one term per layer match. Plain
fine-tuning (no teacher) is the hard-label term alone. Projections for matches with different widths live
here, are trained with the student and saved beside it.
"""

from __future__ import annotations

import torch
from torch import nn

from brewcli.losses import KD_LOSSES, MATCH_LOSSES
from brewcli.schedulers import TEMPERATURE, WEIGHT


def make_projection(kind: str, d_in: int, d_out: int) -> nn.Module:
    linear = nn.Linear(d_in, d_out)
    nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return linear if kind == "linear" else nn.Sequential(linear, nn.ReLU() if kind == "relu" else nn.Tanh())


def probability_shift(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Swap the teacher's top logit with the gold label's, so the gold class is always the argmax."""
    rows = torch.arange(logits.size(0), device=logits.device)
    top = logits.argmax(-1)
    out = logits.clone()
    out[rows, labels], out[rows, top] = logits[rows, top], logits[rows, labels]
    return out


class Objective(nn.Module):
    def __init__(self, recipe, matches, has_teacher: bool):
        super().__init__()
        self.d = recipe.distill
        self.has_teacher = has_teacher
        self.matches = matches
        self.projections = nn.ModuleDict(
            {str(i): make_projection(m.proj, m.student_width, m.teacher_width) for i, m in enumerate(matches) if m.proj}
        )
        self.names = []
        for m in matches:  # unique, readable term names for logs
            name = m.name
            while name in self.names:
                name += "_"
            self.names.append(name)
        self.needs_hidden = any(m.feature == "hidden" for m in matches)
        self.needs_attention = any(m.feature == "attention" for m in matches)

    def _feature(self, out, match, side: str, i: int):
        feats = []
        for layer in match.layers(side):
            x = out.hidden_states[layer] if match.feature == "hidden" else out.attentions[layer - 1]
            if side == "student" and str(i) in self.projections:
                x = self.projections[str(i)](x)
            feats.append(x)
        return tuple(feats) if MATCH_LOSSES.get(match.loss).pair else feats[0]

    def forward(self, batch, s_out, t_out, progress: float):
        """Returns (total loss, {term: (unweighted value, weight)}, mean temperature or None)."""
        d, terms, tau_mean = self.d, {}, None
        if not self.has_teacher:
            terms["hard_label"] = (s_out.loss, 1.0)
        else:
            if d.kd_weight > 0:
                zs, zt = s_out.logits.float(), t_out.logits.float()
                if d.probability_shift:
                    zt = probability_shift(zt, batch["labels"])
                tau = TEMPERATURE.get(d.temperature_scheduler.name)(d.temperature, zs, zt,
                                                                     **d.temperature_scheduler.kwargs())
                per_example = KD_LOSSES.get(d.kd_loss)(zs, zt, tau)
                if d.scale_by_t2:
                    per_example = per_example * torch.as_tensor(tau, device=zs.device) ** 2
                terms["kd"] = (per_example.mean(), d.kd_weight * WEIGHT.get(d.kd_weight_schedule)(progress))
                tau_mean = float(torch.as_tensor(tau).float().mean())
            if d.hard_label_weight > 0:
                terms["hard_label"] = (s_out.loss, d.hard_label_weight * WEIGHT.get(d.hard_label_weight_schedule)(progress))
            mask = batch["attention_mask"]
            for i, (m, name) in enumerate(zip(self.matches, self.names)):
                s = self._feature(s_out, m, "student", i)
                t = self._feature(t_out, m, "teacher", i)
                terms[name] = (MATCH_LOSSES.get(m.loss).fn(s, t, mask), m.weight)
        total = sum(value * weight for value, weight in terms.values())
        return total, terms, tau_mean
