"""`brew init`: write a commented recipe that `brew distill` accepts unchanged."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """\
# brew recipe: distill {teacher} into a {student} student.
# Run it:            brew distill {path}
# Check it first:    brew distill {path} --dry-run     (configs only, no weights)
# Override a value:  brew distill {path} train.epochs=5 distill.temperature=4
name: {name}

task: {task}                  # `brew ls tasks`: classification (one text or a pair) or regression

teacher: {teacher}            # a Hugging Face id or a local folder (a `brew train` output works)

student:
  preset: {student}           # `brew ls students`: T6, T3, T3-small, T4-tiny, T12-nano
  init: auto                  # auto | teacher-layers | random | pretrained; auto copies teacher layers when widths match
  teacher_layers: uniform     # which teacher layers to copy: uniform | first | last | a list like [0, 2, 4, 7, 9, 11]
  # config: {{hidden_size: 256, intermediate_size: 1024}}   # explicit overrides of the student's HF config

data:
{data}
  text: {text}                # one column, or a pair: [sentence1, sentence2]
  label: {label}
  max_length: 128             # tokens per example (longer texts are truncated)

distill:
  temperature: 8              # softens the logits; TextBrewer's published runs use 8
  temperature_scheduler: constant   # constant | flsw | cwsm (`brew ls schedulers`)
  kd_loss: {kd_loss}                  # ce | kl | mse; mse for regression
  scale_by_t2: false          # multiply the KD loss by T^2 (Hinton); TextBrewer does not
  kd_weight: 1.0
  kd_weight_schedule: none    # none | linear_decay | linear_growth (multiplies the weight)
  hard_label_weight: 0.0      # weight of the loss on gold labels
  hard_label_weight_schedule: none
  matches:                    # intermediate-layer losses (`brew ls matches`, `brew ls losses`)
    - preset: uniform         # student layer m <- teacher layer round(m*N/M), for any depths
      feature: hidden
      loss: hidden_mse        # a projection is added automatically when widths differ
  # For a 12-layer teacher, TextBrewer's presets also work, e.g. for T3:
  #   - L3_hidden_mse
  #   - L3_hidden_smmd

train:
  output_dir: {output_dir}
  epochs: 3
  batch_size: 32
  lr: 1.0e-4                  # distillation likes a larger lr than fine-tuning
  warmup: 0.1                 # fraction of steps
  weight_decay: 0.01
  max_grad_norm: 1.0
  eval_every: epoch           # or a number of steps
  save_every: epoch
  keep_best: auto             # the task's main metric (accuracy for classification)
  seed: 42
  device: auto                # auto | cpu | cuda
  precision: fp32             # fp32 | bf16 | fp16 (fp16 needs a GPU)
"""


def data_block(data: str) -> str:
    """A local file becomes `files` with an eval fraction; anything else is a Hugging Face dataset id."""
    if Path(data).suffix.lower() in (".csv", ".tsv", ".json", ".jsonl", ".parquet"):
        return f"  files:\n    train: {data}\n  eval_fraction: 0.1           # held out from train for evaluation"
    name, _, config = data.partition(":")
    lines = [f"  dataset: {name}", f"  config: {config}" if config else "  # config: null",
             "  train_split: train", "  eval_split: validation"]
    return "\n".join(lines)


def render(*, task: str, teacher: str, student: str, data: str, path: str, text: str = "text",
           label: str = "label", output_dir: str | None = None) -> str:
    name = Path(path).stem
    return TEMPLATE.format(name=name, task=task, teacher=teacher, student=student, data=data_block(data), text=text,
                           label=label, path=path, kd_loss="mse" if task == "regression" else "ce",
                           output_dir=output_dir or f"runs/{name}")
