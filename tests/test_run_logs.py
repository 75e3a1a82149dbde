"""What a run leaves in its logs and tells the user: TensorBoard events of a restarted run, the teacher-cache fill."""

import shutil

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import run

runner = CliRunner()


def plan_for(path, *overrides):
    return build_plan(load_recipe(path, list(overrides)))


def scalars(logs, tag="train/total") -> list[tuple[int, float]]:
    events = EventAccumulator(str(logs))
    events.Reload()
    return [(e.step, e.wall_time) for e in events.Scalars(tag)]


def test_a_fresh_run_moves_an_earlier_runs_events_aside(recipe_file, tmp_path, capsys):
    """A run killed before its first checkpoint left events; the next run in the folder starts a clean log."""
    from torch.utils.tensorboard import SummaryWriter

    out = tmp_path / "out"
    killed = SummaryWriter(str(out / "logs"))
    for step in range(1, 8):
        killed.add_scalar("train/total", 9.0, step)
    killed.close()
    run(plan_for(recipe_file(train__max_steps=4, train__log_every=1)))
    assert "moved them to " + str(out / "logs.old") in " ".join(capsys.readouterr().err.split())
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 1  # the new run's file alone
    assert [s for s, _ in scalars(out / "logs")] == [1, 2, 3, 4]
    assert [s for s, _ in scalars(out / "logs.old")] == list(range(1, 8))


def test_a_resumed_run_purges_the_events_after_its_checkpoint(recipe_file, tmp_path):
    """Steps 3 and 4 logged after checkpoint-2 are dropped by the reader; the resumed run's own steps 3, 4 stand."""
    path = recipe_file(train__save_every=2, train__keep_checkpoints=5, train__max_steps=4, train__log_every=1,
                       train__eval_every=2)
    out = tmp_path / "out"
    run(plan_for(path))
    first = dict(scalars(out / "logs"))
    shutil.rmtree(out / "checkpoint-4")  # as if the run had been killed after logging step 4, before saving it
    run(plan_for(path), resume=True)
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 2  # one file a writer, in one folder
    after = scalars(out / "logs")
    assert [s for s, _ in after] == [1, 2, 3, 4]  # not 1, 2, 3, 4, 3, 4
    times = dict(after)
    assert times[1] == first[1] and times[2] == first[2]  # the first run's steps up to the checkpoint are kept
    assert times[3] > first[4] and times[4] > first[4]  # steps 3 and 4 are the resumed run's
    assert [e.step for e in _eval(out)] == [2, 4]


def _eval(out):
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    return events.Scalars("eval/accuracy")


def test_a_cache_fill_says_when_it_starts_and_ends(recipe_file, teacher_dir, tmp_path, monkeypatch):
    import brewcli.cache_entry as cache_entry

    path = recipe_file(distill={"temperature": 2, "teacher_cache": "disk", "cache_dir": str(tmp_path / "cache"),
                                "matches": [{"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}]},
                       train__max_steps=2)
    r = runner.invoke(app, ["distill", str(path)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    start = text.index(f"filling the teacher cache for {teacher_dir}: 36 rows, one teacher pass ({tmp_path / 'cache'}")
    end = text.index(f"filled the teacher cache for {teacher_dir}: 36 rows in ")
    assert start < end < text.index("step 2/2")  # the fill comes before training
    assert "teacher cache: " not in text  # a short fill: no progress lines between start and end in a log
    assert "rows/s" in text[end:]

    monkeypatch.setattr(cache_entry, "FILL_LINE_EVERY", 0.0)  # a long fill: a line every so often, not a terminal bar
    shutil.rmtree(tmp_path / "cache")
    shutil.rmtree(tmp_path / "out")
    r = runner.invoke(app, ["distill", str(path), "train.eval_batch_size=8"])  # the fill's batch: 5 batches of 36 rows
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("teacher cache: ")]
    assert [ln.split(",")[0] for ln in lines] == [f"teacher cache: {n}/36 rows" for n in (8, 16, 24, 32)]
    assert all(ln.endswith("rows/s") for ln in lines)

    r = runner.invoke(app, ["distill", str(path), f"train.output_dir={tmp_path / 'again'}"])
    assert r.exit_code == 0, r.output
    assert "teacher cache hit" in r.output and "filling the teacher cache" not in r.output
