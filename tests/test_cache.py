"""The teacher-output cache on tiny models: keys, hits and invalidation, equality with a live teacher, damage,
memory mode, resume, bad cache folders; and the length-grouped sampler."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from brewcli.cli import app
from brewcli.plan import build_plan
from brewcli.recipe import load_recipe
from brewcli.train import EpochSampler, Meter, build_cache, build_job, run
from tests.conftest import base_recipe

runner = CliRunner()


def plan_for(path, *overrides):
    return build_plan(load_recipe(path, list(overrides)))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BREW_CACHE", str(root))
    return root


def step_terms(plan, steps: int = 3) -> list[dict]:
    """The logged term values of the first optimizer steps of a run built from `plan`."""
    job = build_job(plan)
    out = []
    for window, _ in job.windows():
        meter = Meter()
        job.step(window, meter)
        out.append(meter.raw)
        if len(out) == steps:
            break
    return out


def test_key_hit_and_invalidation(recipe_file, teacher_dir, tmp_path, cache_dir):
    path = recipe_file(distill__teacher_cache="disk")
    plan = plan_for(path)
    assert plan.cache is not None and not plan.cache.hit
    assert [lay.name for lay in plan.cache.layouts] == ["logits", "hidden.0", "hidden.1", "hidden.3", "hidden.4"]
    build_cache(plan)
    again = plan_for(path)
    assert again.cache.hit and again.cache.key == plan.cache.key
    manifest = json.loads((cache_dir / plan.cache.key / "manifest.json").read_text())
    assert manifest["identity"]["rows"] == 36 and manifest["identity"]["dtype"] == "fp16"
    # another student with the same teacher, data and matches reuses the entry
    other = plan_for(path, "student.preset=T3", "student.init=random", "train.output_dir=" + str(tmp_path / "o2"))
    assert other.cache.hit and other.cache.key == plan.cache.key
    # one changed teacher weight is a new key
    changed = tmp_path / "changed-teacher"
    shutil.copytree(teacher_dir, changed)
    weights = load_file(str(changed / "model.safetensors"))
    name = next(k for k in weights if k.endswith("classifier.weight"))
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(changed / "model.safetensors"), metadata={"format": "pt"})
    assert plan_for(path, f"teacher={changed}").cache.key != plan.cache.key
    # other data, other features, another dtype: new keys
    keys = {plan_for(path, o).cache.key for o in ("data.max_train_samples=20", "distill.matches=[]",
                                                   "distill.cache_dtype=fp32", "data.max_length=12")}
    assert len(keys) == 4 and plan.cache.key not in keys


def test_warm_fp32_cache_gives_the_live_teachers_losses(recipe_file, tmp_path, cache_dir):
    path = recipe_file(train__max_steps=3)
    live = step_terms(plan_for(path, "distill.teacher_cache=off", f"train.output_dir={tmp_path / 'live'}"))
    cold = step_terms(plan_for(path, "distill.cache_dtype=fp32", f"train.output_dir={tmp_path / 'cold'}"))
    warm_plan = plan_for(path, "distill.cache_dtype=fp32", f"train.output_dir={tmp_path / 'warm'}")
    assert warm_plan.cache.hit
    warm = step_terms(warm_plan)
    assert len(live) == 3 and live[0].keys() == warm[0].keys() and "kd" in live[0]
    for a, b, c in zip(live, cold, warm):
        for k in a:
            assert b[k] == pytest.approx(a[k], abs=1e-6) and c[k] == pytest.approx(a[k], abs=1e-6), k
    # fp16 (the default) is close, not equal; memory mode stores the same fp16 values as disk
    fp16 = step_terms(plan_for(path, f"train.output_dir={tmp_path / 'fp16'}"))
    memory = step_terms(plan_for(path, "distill.teacher_cache=memory", f"train.output_dir={tmp_path / 'mem'}"))
    for a, b, c in zip(live, fp16, memory):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-2, abs=1e-3) and c[k] == b[k], k


def test_damaged_entry_is_rebuilt(recipe_file, tmp_path, cache_dir, capsys):
    path = recipe_file(distill__teacher_cache="disk", train__max_steps=2)
    plan = plan_for(path)
    build_cache(plan)
    hidden = cache_dir / plan.cache.key / "hidden.1.npy"
    data = bytearray(hidden.read_bytes())
    data[-7] ^= 0xFF  # one changed byte
    hidden.write_bytes(bytes(data))
    capsys.readouterr()
    run(plan_for(path))
    err = " ".join(capsys.readouterr().err.split())
    assert "is damaged (hidden.1.npy does not match its checksum); rebuilding it" in err
    assert plan_for(path, f"train.output_dir={tmp_path / 'x'}").cache.hit
    (cache_dir / plan.cache.key / "hidden.0.npy").write_bytes(b"")  # truncated
    capsys.readouterr()
    run(plan_for(path, f"train.output_dir={tmp_path / 'y'}"))
    assert "rebuilding it" in capsys.readouterr().err


def test_interrupted_fill_leaves_no_entry(recipe_file, cache_dir, monkeypatch):
    import brewcli.cache_entry as cache_mod

    plan = plan_for(recipe_file(distill__teacher_cache="disk"))
    monkeypatch.setattr(cache_mod, "_finalise", lambda cp, tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build_cache(plan)
    key = plan.cache.key
    assert not (cache_dir / key).exists() and not plan_for(recipe_file()).cache.hit
    result, text = brew("cache", "ls", "--json")  # the killed fill's KEY.tmp is listed, and removable
    assert [(e["key"], e["state"]) for e in json.loads(text)["entries"]] == [(key, "interrupted")]
    import fcntl

    with open(cache_dir / f"{key}.lock", "w") as held:  # a run filling it now: listed as such, never removed
        fcntl.flock(held, fcntl.LOCK_EX)
        assert json.loads(brew("cache", "ls", "--json")[1])["entries"][0]["state"] == "filling"
        assert brew("cache", "rm", "--all")[0].exit_code == 0 and (cache_dir / f"{key}.tmp").is_dir()
    result, text = brew("cache", "rm", key[:6])
    assert result.exit_code == 0 and not (cache_dir / f"{key}.tmp").exists(), text
    monkeypatch.undo()
    build_cache(plan_for(recipe_file()))  # the next fill starts over and completes
    assert plan_for(recipe_file()).cache.hit


def test_resume_with_a_cache_is_exact(recipe_file, tmp_path, cache_dir):
    path = recipe_file(train__save_every=2, train__keep_checkpoints=5, train__max_steps=4, train__eval_every=2,
                       train__group_by_length=True)
    out = tmp_path / "out"
    run(plan_for(path))
    full = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    shutil.rmtree(out / "checkpoint-4")
    run(plan_for(path), resume=True)
    resumed = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_grouped_sampler_covers_every_row_and_groups_lengths():
    lengths = [(i * 7919) % 100 + 1 for i in range(1000)]
    s = EpochSampler(1000, seed=3, lengths=lengths, batch_size=4)
    order = list(s)
    assert sorted(order) == list(range(1000))
    group = EpochSampler.GROUP * 4
    for g in range(0, 1000, group):
        chunk = [lengths[i] for i in order[g:g + group]]
        assert chunk == sorted(chunk, reverse=True)
    s.epoch = 1
    assert list(s) != order  # a new shuffle each epoch
    padded = sum(max(lengths[i] for i in order[b:b + 4]) * 4 for b in range(0, 1000, 4))
    plain = list(EpochSampler(1000, seed=3))
    padded_plain = sum(max(lengths[i] for i in plain[b:b + 4]) * 4 for b in range(0, 1000, 4))
    assert padded < 0.7 * padded_plain


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result, " ".join((result.output or "").split())


def test_cache_commands(recipe_file, tmp_path, cache_dir):
    path = recipe_file(distill__teacher_cache="disk")
    result, text = brew("distill", path, "--dry-run")
    assert result.exit_code == 0 and "disk (miss: filled by one teacher pass before training)" in text
    result, text = brew("cache", "build", path)
    assert result.exit_code == 0, text
    assert "built" in text and "36 rows" in text
    result, text = brew("distill", path, "--dry-run")
    assert "disk (hit: the teacher does not run during training)" in text
    result = runner.invoke(app, ["cache", "ls", "--json"])
    listed = json.loads(result.stdout)
    assert len(listed["entries"]) == 1 and listed["entries"][0]["rows"] == 36
    entry = listed["entries"][0]
    assert entry["features"] == ["logits", "hidden.0", "hidden.1", "hidden.3", "hidden.4"] and entry["bytes"] > 0
    result, text = brew("cache", "ls")
    assert result.exit_code == 0 and entry["key"][:8] in text
    result, text = brew("cache", "rm", "zzz")
    assert result.exit_code == 2 and "no entry" in text
    result, text = brew("cache", "rm", entry["key"][:6])
    assert result.exit_code == 0 and "removed 1 entry" in text and not any(cache_dir.iterdir()) is False
    assert json.loads(runner.invoke(app, ["cache", "ls", "--json"]).stdout)["entries"] == []


def test_bad_cache_folders(recipe_file, tmp_path, cache_dir, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result, text = brew("distill", recipe_file(distill__teacher_cache="disk", distill__cache_dir=str(blocker)),
                        "--dry-run")
    assert result.exit_code == 2 and "distill.cache_dir" in text and "is a file" in text and "Traceback" not in text
    result, text = brew("distill", recipe_file(distill__teacher_cache="disk",
                                               distill__cache_dir=str(blocker / "sub")), "--dry-run")
    assert result.exit_code == 2 and "distill.cache_dir: cannot create the cache folder" in text
    # a folder the user named that is a file is an error on auto too (it would never be used, silently)
    result, text = brew("distill", recipe_file(distill__cache_dir=str(blocker)), "--dry-run")
    assert result.exit_code == 2 and "distill.cache_dir: " in text and "is a file" in text, text
    monkeypatch.setenv("BREW_CACHE", str(blocker))
    result, text = brew("distill", recipe_file(), "--dry-run")
    assert result.exit_code == 2 and "BREW_CACHE (environment): " in text and "is a file" in text, text
    for args in (["ls"], ["rm", "--all"]):
        result, text = brew("cache", *args)
        assert result.exit_code == 2 and "BREW_CACHE (environment): " in text and "is a file" in text, text
        result, text = brew("cache", *args, "--cache-dir", blocker)
        assert result.exit_code == 2 and "--cache-dir: " in text and "is a file" in text, text
    monkeypatch.setenv("BREW_CACHE", str(cache_dir))
    import brewcli.cache as cache_mod

    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    result, text = brew("distill", recipe_file(distill__teacher_cache="disk"), "--dry-run")
    assert result.exit_code == 2 and "BREW_CACHE (environment): the teacher cache needs about" in text
    assert "100B free" in text
    # auto falls back to the live teacher with a note, and says why
    result, text = brew("distill", recipe_file(), "--dry-run")
    assert result.exit_code == 0 and "teacher cache off: the teacher cache needs about" in text, text
    result, text = brew("cache", "build", recipe_file(distill__teacher_cache="off"))
    assert result.exit_code == 2 and "distill.teacher_cache" in text


def test_cached_rows_land_on_their_tokens_with_either_padding_side():
    """A stored row is unpadded: the cached teacher puts it back under the batch's mask, right- or left-padded."""
    import numpy as np

    from brewcli.batch import Batch
    from brewcli.cache import Layout
    from brewcli.cache_entry import CachedTeacher

    stored = {0: np.arange(6, dtype=np.float16).reshape(3, 2), 1: np.arange(10, 14, dtype=np.float16).reshape(2, 2)}

    class Stored:  # the two rows an entry holds, as Entry.read returns them
        layouts = [Layout("hidden.1", "tok", 2)]

        def read(self, row, lay):
            return stored[row]

    for mask in ([[1, 1, 1], [1, 1, 0]], [[1, 1, 1], [0, 1, 1]]):
        mask = torch.tensor(mask)
        batch = Batch({"input_ids": torch.zeros_like(mask), "attention_mask": mask}, {}, torch.tensor([0, 1]),
                      rows=torch.tensor([0, 1]))
        out = CachedTeacher(Stored(), torch.device("cpu"))(batch).hidden[1]
        assert out.dtype == torch.float32 and torch.equal(out[0], torch.from_numpy(stored[0]).float())
        assert torch.equal(out[1][mask[1].bool()], torch.from_numpy(stored[1]).float())
        assert torch.equal(out[1][~mask[1].bool()], torch.zeros(1, 2))


def test_a_moved_teacher_folder_still_hits(tmp_path, teacher_dir, data_files):
    """A local teacher is known by its files' hashes: the same teacher in another folder (another clone) hits."""
    from brewcli.recipe import Recipe

    moved = shutil.copytree(teacher_dir, tmp_path / "elsewhere" / "teacher")
    keys = []
    for teacher in (teacher_dir, moved):
        raw = base_recipe(teacher, data_files, tmp_path / "out", distill={
            "teacher_cache": "disk", "cache_dir": str(tmp_path / "cache"),
            "matches": [{"preset": "uniform", "feature": "hidden", "loss": "hidden_mse"}]})
        keys.append(build_plan(Recipe.model_validate(raw)).teachers[0].cache.key)
    assert keys[0] == keys[1]
