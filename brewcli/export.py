"""`brew export`: a brew output folder to ONNX, optionally int8, checked against PyTorch on real rows.

The model is exported with `torch.onnx.export` (the torch.export-based exporter, dynamic batch and sequence axes)
through its arch; int8 is onnxruntime's dynamic quantization of the weights, per channel unless asked otherwise
(per tensor drifts further). Before the folder is written, the export runs beside the PyTorch model on rows of the
run's own data and the largest difference of the task's outputs is measured; past the tolerance the export is
refused with that figure. The folder holds `model.onnx`, the tokenizer, the run's config.json, recipe.yaml and
brew.json (so `brew eval` scores it like the run itself) and `export.json`, the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch

from brewcli.errors import BrewError, doing, nearest

OPSETS = tuple(range(18, 24))  # torch's exporter writes opset 18 and newer; onnxruntime 1.32 runs up to 23
QUANTIZATIONS = ("int8",)
TOLERANCE = {"fp32": 1e-4, "int8": 0.15}  # the largest difference, relative to the largest output on those rows
CHECK_ROWS = 64


def torch_to_onnx(model, path: Path, inputs: dict, outputs: tuple[str, ...], opset: int, dynamo: bool = True) -> None:
    """Export `model` (called with keyword inputs, returning a ModelOutput) to ONNX at `path`. `dynamo=False`: the
    TorchScript exporter, for models torch.export cannot keep dynamic (a GRU unrolls over the sequence there; the
    TorchScript exporter writes ONNX's own GRU op)."""
    names = list(inputs)

    class Positional(torch.nn.Module):  # the exporter passes inputs by position; the model takes them by name
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(names, args)))
            return tuple(out[f] for f in outputs)

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    wrapper = Positional().eval()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            axes = {0: "batch", 1: "sequence"}
            shapes = dict(dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in names),)) if dynamo else \
                dict(dynamic_axes={n: axes for n in (*names, *outputs)})  # one *args / every input and output
            torch.onnx.export(wrapper, tuple(inputs[n] for n in names), str(path), input_names=names,
                              output_names=list(outputs), opset_version=opset, dynamo=dynamo, verbose=False,
                              external_data=sum(p.numel() for p in model.parameters()) * 4 > 1.5e9,  # the 2 GB limit
                              **shapes)
    finally:
        quiet.setLevel(level)


def quantize_int8(source: Path, target: Path, per_channel: bool = True) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic logs its advice at WARNING
        quantize_dynamic(str(source), str(target), per_channel=per_channel, weight_type=QuantType.QInt8)


def check_options(quantize: str | None, opset: int, tolerance: float | None) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        guess = nearest(quantize, QUANTIZATIONS)
        raise BrewError(f"--quantize {quantize}: brew quantizes to int8 only (onnxruntime's dynamic quantization)"
                        + (f"; did you mean {guess}?" if guess else "; use --quantize int8, or leave it out for fp32"))
    if opset not in OPSETS:
        near = min(OPSETS, key=lambda o: abs(o - opset))
        raise BrewError(f"--opset {opset}: expected {OPSETS[0]} to {OPSETS[-1]} (torch's exporter writes opset 18 and "
                        f"newer, onnxruntime runs up to {OPSETS[-1]}); nearest: {near}")
    if tolerance is not None and not tolerance > 0:
        raise BrewError(f"--tolerance {tolerance}: expected a positive number (the largest difference allowed, "
                        "relative to the largest output)")


def difference(model, exported, batches, task) -> dict:
    """The largest difference between the PyTorch model's task outputs and the export's on `batches`, relative to
    the largest output, and (for tasks with classes) how often their predictions agree."""
    worst, scale, agree, total = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for batch in batches:
            ref = task.logits(model(**batch.inputs), batch.mask).float()
            got = task.logits(exported(**batch.inputs), batch.mask).float()
            worst = max(worst, (ref - got).abs().max().item())
            scale = max(scale, ref.abs().max().item())
            if task.has_classes:
                keep = batch.mask.bool() if task.per_token else torch.ones(ref.shape[0], dtype=torch.bool)
                same = ref.argmax(-1) == got.argmax(-1)
                agree += same[keep].sum().item()
                total += keep.sum().item()
    out = {"max_difference": float(f"{worst:.3g}"), "max_output": round(scale, 4),
           "relative_difference": float(f"{worst / max(scale, 1e-12):.3g}")}
    if total:
        out["prediction_agreement"] = round(agree / total, 4)
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_run(run_path: str, out: str | None = None, quantize: str | None = None, opset: int = 18,
               per_tensor: bool = False, tolerance: float | None = None) -> dict:
    """Export a brew output folder; returns the manifest (also written as export.json)."""
    from brewcli import data as data_mod
    from brewcli.evaluate import load_model
    from brewcli.models.arch import arch_of
    from brewcli.models.hf import load_tokenizer
    from brewcli.runfolder import EXPORT_MANIFEST, open_run, pick_split
    from brewcli.runtime import OnnxModel, require_onnx

    check_options(quantize, opset, tolerance)
    require_onnx()
    run = open_run(run_path, what="a brew output folder (a run, its best/ or a checkpoint-STEP/ folder) to export")
    if run.export is not None:
        raise BrewError(f"{run_path}: is already an export (export.json); export the run it came from, "
                        f"{run.export.get('source')}")
    weights = run.folder / "model.safetensors"
    if not weights.is_file():
        raise BrewError(f"{run_path}: has no model.safetensors; brew exports the folders it writes (save_pretrained "
                        "safetensors)")
    target = Path(out) if out else run.folder / ("onnx-int8" if quantize else "onnx")
    if target.exists():
        raise BrewError(f"--out {target}: exists; remove it or give another folder" if out else
                        f"{target} exists (an earlier export); remove it or pass --out DIR")
    precision = quantize or "fp32"
    tolerance = tolerance or TOLERANCE[precision]
    task, names = run.task, run.names
    split, ds = pick_split(run)
    rows = ds.select(range(min(CHECK_ROWS, len(ds))))
    tokenizer = load_tokenizer(str(run.folder), "checkpoint")
    collate = task.collate(tokenizer)
    encoded = task.encode(rows, tokenizer, names)
    batches = list(data_mod.loader(encoded, collate, 16))
    # and the first row alone, unpadded: another batch size and length than the export's example (a shape the
    # exporter fixed by mistake fails here, not at `brew eval`'s batch-1 timing)
    checked = list(data_mod.loader(encoded.select([0]), collate, 1)) + batches
    doing(f"loading {run.folder}")
    model = load_model(run.folder, task).eval()
    example = {k: v if v.shape[0] > 1 else v.repeat(2, *[1] * (v.dim() - 1)) for k, v in batches[0].inputs.items()}
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        doing(f"exporting {run.folder} to ONNX (opset {opset})")
        arch = arch_of(model.config)
        arch.export(model, partial / "model.onnx", example, task.head, opset)
        if quantize:
            doing("quantizing to int8" + (" per tensor" if per_tensor else " per channel"))
            quantize_int8(partial / "model.onnx", partial / "model.int8.onnx", per_channel=not per_tensor)
            (partial / "model.int8.onnx").replace(partial / "model.onnx")
            (partial / "model.onnx.data").unlink(missing_ok=True)  # a large fp32 model's weights; int8 holds its own
        params = sum(p.numel() for p in model.parameters())
        doing(f"checking the export against PyTorch on {len(rows)} rows of the {split} split")
        try:
            check = difference(model, OnnxModel(partial, {"file": "model.onnx"}), checked, task)
        except Exception as e:  # onnxruntime's own error types: a graph that does not run on some input shape
            raise BrewError(f"the {precision} export does not run on every batch shape of the {split} split "
                            f"({str(e).splitlines()[0][:200]}); nothing was written (this is worth reporting)") from None
        if check["relative_difference"] > tolerance:
            raise BrewError(f"the {precision} export differs from PyTorch by up to {check['max_difference']} on "
                            f"{len(rows)} rows of the {split} split ({check['relative_difference']:.2%} of the "
                            f"largest output, {check['max_output']}), past the tolerance of {tolerance:.2%}; "
                            "nothing was written" + ("" if quantize else " (an fp32 export should match closely: "
                                                     "this is worth reporting)") +
                            ("; per channel drifts less than --per-tensor" if per_tensor else "") +
                            "; pass --tolerance to accept it")
        tokenizer.save_pretrained(partial)
        for name in ("config.json", "recipe.yaml", "brew.json"):
            if (run.folder / name).is_file():
                shutil.copy2(run.folder / name, partial / name)
        manifest = {"format": "onnx", "file": "model.onnx", "precision": precision,
                    "per_channel": (not per_tensor) if quantize else None, "opset": opset, "task": task.name,
                    "head": task.head, "labels": names, "inputs": list(example),
                    "outputs": list(arch.outputs(task.head)), "params": params,
                    "source": str(run.folder.resolve()), "source_sha256": sha256(weights),
                    "checked_rows": len(rows), "checked_split": split, **check, "tolerance": tolerance,
                    "versions": _versions()}
        (partial / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        partial.replace(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    manifest["folder"] = str(target)
    manifest["size_bytes"] = sum(f.stat().st_size for f in target.glob("*.onnx*"))
    return manifest


def _versions() -> dict:
    import onnx
    import onnxruntime
    import transformers

    from brewcli import __version__

    return {"brewcli": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
