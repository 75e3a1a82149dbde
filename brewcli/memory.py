"""A run's peak memory, estimated from the plan before any weights load (`--dry-run` prints it).

The formula, in bytes (B batch, L data.max_length, H hidden, F feed-forward width, A heads, b bytes per activation:
4 in fp32, 2 in bf16/fp16; parameters P):

- student: 16 P (fp32 weights, gradients and AdamW's two moments), and the projections the same way;
- student activations kept for the backward, per layer and one more for the embeddings and head:
  b * (9 B L H + 2 B L F + 2.5 B A L^2). This is Korthikanti et al.'s count for a transformer layer
  (34 s b h + 5 a s^2 b bytes at 2-byte activations and F = 4H: inputs of every matmul, the GELU input, softmax
  output, dropout masks), written for any F. SDPA kernels that keep no attention matrix make it an overestimate;
- teacher: 4 P (fp32 weights, no gradients) and, without gradients, one layer's live tensors
  b * (B L (2H + F) + 2 B A L^2) plus the features the terms keep (B L H per hidden layer, B A L^2 per attention
  map); not during training when a cache hit holds its outputs, but during the fill at train.eval_batch_size;
- the memory teacher cache: its size, in RAM;
- on the CPU, BASELINE for the interpreter and its libraries (torch, transformers, datasets, the tokenised data).

The peak is the fixed part plus the larger of the training step (student activations and a live teacher's forward)
and a cache fill. A disk cache is read through the page cache, which the system can reclaim, so it is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASELINE = 600 * 2**20  # bytes: a CPU process with torch, transformers and datasets imported and the data encoded
C_HIDDEN, C_FFN, C_ATTENTION = 9.0, 2.0, 2.5  # activation elements kept per B*L*H, B*L*F, B*A*L^2 and layer


@dataclass
class Estimate:
    device: str  # cpu | cuda
    parts: dict[str, float] = field(default_factory=dict)  # bytes on the device, by what holds them
    host: dict[str, float] = field(default_factory=dict)  # bytes in RAM besides, on a CUDA run (a memory cache)

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def _widths(config):
    from brewcli.models.families import FamilyError, read_widths

    try:
        return read_widths(config)
    except FamilyError:
        return None


def layer_activations(w, batch: int, length: int, nbytes: int) -> float:
    """Bytes one transformer layer keeps for its backward (see the module docstring)."""
    return nbytes * (C_HIDDEN * batch * length * w.hidden + C_FFN * batch * length * w.ffn
                     + C_ATTENTION * batch * w.heads * length ** 2)


def teacher_forward(w, batch: int, length: int, nbytes: int, hidden: int = 0, attention: int = 0) -> float:
    """Bytes a forward without gradients holds at its peak: one layer's live tensors and the kept features."""
    live = batch * length * (2 * w.hidden + w.ffn) + 2 * batch * w.heads * length ** 2
    kept = hidden * batch * length * w.hidden + attention * batch * w.heads * length ** 2
    return nbytes * (live + kept)


def device_of(recipe) -> str:
    import torch

    d = recipe.train.device
    return "cuda" if d == "cuda" or (d == "auto" and torch.cuda.is_available()) else "cpu"


def estimate(plan, device: str | None = None) -> Estimate:
    """The peak memory of a run of `plan` on `device` (the recipe's by default)."""
    r, t = plan.recipe, plan.recipe.train
    device = device or device_of(r)
    est = Estimate(device)
    nbytes = 4 if t.precision == "fp32" else 2
    batch, length = t.batch_size, r.data.max_length
    shared = {m.group or i: m for i, m in enumerate(plan.matches) if m.proj}  # a group shares one projection
    proj = sum(m.student_width * m.teacher_width + m.teacher_width for m in shared.values())
    est.parts["student weights, gradients, AdamW"] = 16 * (plan.student_params + proj)
    sw = _widths(plan.student_config)
    train = 0.0 if sw is None else (sw.layers + 1) * layer_activations(sw, batch, length, nbytes)
    fill = 0.0
    if plan.teachers:
        from brewcli.models.features import FEATURE_KINDS
        from brewcli.objective import build_objective

        needs = build_objective(plan).teacher_needs
        for pt in plan.teachers:
            est.parts[f"{pt.name} weights"] = 4 * (pt.params or 0)
            tw, need = _widths(pt.config), needs.get(pt.name)
            if tw is None or need is None:
                continue
            kept = dict(hidden=sum(len(need.at(k)) for k in need.layers if FEATURE_KINDS.get(k).layout == "tok"),
                        attention=sum(len(need.at(k)) for k in need.layers if FEATURE_KINDS.get(k).layout == "att"))
            if pt.cache is None:  # live: beside the student's step
                train += teacher_forward(tw, batch, length, nbytes, **kept)
            elif not pt.cache.hit:  # filled before training, at the eval batch size
                fill = max(fill, teacher_forward(tw, t.eval_batch_size, length, nbytes, **kept))
            if pt.cache is not None and pt.cache.mode == "memory":
                (est.host if device == "cuda" else est.parts)["teacher cache (memory)"] = pt.cache.bytes
    est.parts["activations"] = max(train, fill)
    if device == "cpu":
        est.parts["libraries and data"] = BASELINE
    return est


def available(device: str) -> float | None:
    """Bytes free for the run: CUDA's free memory on the current device, else the system's available RAM."""
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0])
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n < 1e10 else f"{n / 1e9:.0f} GB"


def describe(est: Estimate, free: float | None) -> str:
    """The plan's one line: the peak, its parts, and what the device has free."""
    parts = ", ".join(f"{k} {_gb(v)}" for k, v in est.parts.items() if v)
    host = "".join(f"; {k} {_gb(v)} in RAM" for k, v in est.host.items())
    where = "RAM" if est.device == "cpu" else "GPU memory"
    room = f"; {_gb(free)} {where} free" if free is not None else ""
    return f"about {_gb(est.total)} peak on {est.device} ({parts}){host}{room}"


def fit_warning(est: Estimate, free: float | None, ram_free: float | None = None, recipe=None) -> str | None:
    """A warning when the estimate exceeds the free memory (None when it fits or nothing is known). `ram_free`: on a
    CUDA run, the RAM free for what stays on the host (a memory teacher cache)."""
    where = "RAM" if est.device == "cpu" else "GPU memory"
    fixes = "lower train.batch_size (with train.grad_accum to keep the step's size) or data.max_length"
    if recipe is not None and recipe.train.precision == "fp32" and est.device == "cuda":
        fixes += ", or use train.precision: bf16"
    need, room = est.total, free
    host = sum(est.host.values())
    if host and ram_free is not None and host > ram_free:
        need, room, where, fixes = host, ram_free, "RAM", "set distill.teacher_cache: disk"
    elif room is None or need <= room:
        return None
    if "teacher cache (memory)" in est.parts:
        fixes += ", or set distill.teacher_cache: disk"
    return (f"this run needs about {_gb(need)} at its peak but {_gb(room)} {where} is free, so it may not fit; "
            f"{fixes}")


def plan_lines(plan) -> tuple[str, str | None]:
    """(the plan's memory line, a warning when the run may not fit)."""
    est = estimate(plan)
    free = available(est.device)
    ram = available("cpu") if est.host else None
    return describe(est, free), fit_warning(est, free, ram, plan.recipe)
