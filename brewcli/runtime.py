"""An exported model run by onnxruntime behind the interface scoring uses, so that `brew eval` scores an export
with the same code (the task's logits, metric and post-processing: QA spans, NER entities, multi-label thresholds)
as a PyTorch folder: called with the collated torch inputs, it returns its outputs as attributes named as the
Hugging Face output's (`logits`, `start_logits`/`end_logits`, `last_hidden_state`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from brewcli.errors import BrewError


def require_onnx(what: str = "brew export") -> None:
    """onnx, onnxruntime and onnxscript are the `export` extra; a clear message where they are missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise BrewError(f"{what} needs {', '.join(missing)}, which are not installed: pip install 'brewcli[export]' "
                        "(bash scripts/setup.sh installs them)")


class OnnxModel:
    training = False

    def __init__(self, folder: Path, manifest: dict, threads: int | None = None):
        require_onnx("scoring an export")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = threads
        else:
            options.intra_op_num_threads = torch.get_num_threads()  # as many threads as PyTorch uses beside it
        path = Path(folder) / manifest.get("file", "model.onnx")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged or foreign file
            raise BrewError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]}); "
                            "export the run again") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.num_params = manifest.get("params")

    def __call__(self, **inputs):
        missing = [k for k in self.inputs if k not in inputs]
        if missing:
            raise BrewError(f"the exported model takes {', '.join(missing)}, which the tokenizer did not give")
        feed = {k: inputs[k].detach().cpu().numpy() for k in self.inputs}
        values = self.session.run(None, feed)
        return SimpleNamespace(**{n: torch.from_numpy(v) for n, v in zip(self.outputs, values)})

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def to(self, device):
        return self
