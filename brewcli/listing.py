"""`brew ls`: what a recipe can name, one line each."""

from __future__ import annotations

from rich.table import Table

from brewcli.augment import METHODS as AUGMENT_METHODS
from brewcli.losses import KD_LOSSES, MATCH_LOSSES
from brewcli.matches import MATCH_PRESETS
from brewcli.models.arch import ARCHS
from brewcli.models.features import FEATURE_KINDS
from brewcli.models.students import PRESETS
from brewcli.schedulers import LR, TEMPERATURE, WEIGHT
from brewcli.tasks import TASKS
from brewcli.ui import console

SECTIONS = {
    "students": [("student.preset", PRESETS)],
    "archs": [("(the model code of the student and teachers)", ARCHS)],
    "matches": [("distill.matches[].preset", MATCH_PRESETS)],
    "losses": [("distill.kd_loss", KD_LOSSES), ("distill.matches[].loss", MATCH_LOSSES)],
    "features": [("distill.matches[].feature", FEATURE_KINDS)],
    "schedulers": [("distill.temperature_scheduler", TEMPERATURE), ("distill.*_weight_schedule", WEIGHT),
                   ("train.lr_schedule", LR)],
    "tasks": [("task", TASKS)],
    "augment": [("data.augment.method", AUGMENT_METHODS)],
}


def render_listing(sections: list[str]) -> None:
    for section in sections:
        table = Table(title=section, title_justify="left")
        for col in ("name", "recipe key", "what it is"):
            table.add_column(col)
        for key, registry in SECTIONS[section]:
            for e in registry.entries():
                name = e.name + (f" (alias {', '.join(e.aliases)})" if e.aliases else "")
                table.add_row(name, key, e.doc)
        console.print(table)
