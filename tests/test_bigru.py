"""The BiGRU student (`student: BiGRU`): it distils, trains without a teacher, evaluates and exports for every
headed task; its backward direction never reads padding; plain transformers loads a saved one with
trust_remote_code and no brew; its embeddings come from the teacher, a model folder or GloVe; and what it cannot do
(attention matches, teacher layers) is refused at plan time."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from brewcli.cli import app
from tests.conftest import WORDS, make_tokenizer
from tests.test_export import HEADED, _main
from tests.test_tasks import recipe_for

runner = CliRunner()


def brew(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def bigru_recipe(name, tmp, student=None, **changes):
    path = recipe_for(name, tmp)
    recipe = yaml.safe_load(path.read_text())
    recipe["student"] = student or {"preset": "BiGRU"}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        recipe[section] = value if not field else {**recipe[section], field: value}
        if value is None:
            recipe.pop(section)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("name", HEADED)
def test_a_bigru_distils_evaluates_and_exports_every_headed_task(name, tmp_path):
    r = brew("distill", bigru_recipe(name, tmp_path))
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    assert "embeddings the teacher's" in r.output and "bidirectional GRU layer x" in r.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "brew-bigru" and config["auto_map"]["AutoConfig"] == "bigru_modeling.BrewBiGRUConfig"
    assert (out / "bigru_modeling.py").is_file() and (out / "model.safetensors").is_file()
    report = json.loads(brew("eval", out, "--json").stdout)
    assert report["student"]["params"] < report["teacher"]["params"]
    r = brew("export", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "onnx" / "export.json").read_text())
    assert manifest["relative_difference"] < 1e-5
    r = brew("eval", out / "onnx", "--json")
    assert r.exit_code == 0, r.output
    exported = json.loads(r.stdout)
    assert exported["student"][_main(name)] == pytest.approx(report["student"][_main(name)], rel=1e-4)


def test_plain_transformers_loads_a_saved_bigru_without_brew(tmp_path):
    assert brew("distill", bigru_recipe("classification", tmp_path)).exit_code == 0
    out = tmp_path / "out"
    code = f"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
tok = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)
assert not any(m.startswith("brewcli") for m in sys.modules), "brew was imported"
with torch.no_grad():
    print(json.dumps(model(**tok(["good movie", "awful plot"], padding=True, return_tensors="pt")).logits.tolist()))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    theirs = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        mine = model(**tok(["good movie", "awful plot"], padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(theirs, mine)


@pytest.mark.parametrize("head", ["sequence", "token", "span"])
def test_padding_never_reaches_a_real_token(head):
    from brewcli.models.bigru import register
    from brewcli.models.bigru_modeling import HEADS, BrewBiGRUConfig

    register()
    torch.manual_seed(0)
    model = HEADS[head](BrewBiGRUConfig(vocab_size=30, embedding_size=12, hidden_size=16, num_hidden_layers=2,
                                        num_labels=3)).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
        b = model(input_ids=padded, attention_mask=(padded != 0).long(), output_hidden_states=True)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y[:, :4])
    first = a.logits if head != "span" else a.start_logits
    second = b.logits if head != "span" else b.start_logits
    torch.testing.assert_close(first, second if head == "sequence" else second[:, :4])


def test_reverse_within_is_its_own_inverse():
    from brewcli.models.bigru_modeling import reversal, reverse_within

    x = torch.arange(10.0).view(2, 5, 1)
    index = reversal(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    r = reverse_within(x, index)
    assert r[0, :, 0].tolist() == [2, 1, 0, 3, 4] and r[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(reverse_within(r, index), x)


def _glove_txt(path, dim=6):
    rng = np.random.default_rng(0)
    lines = [f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=dim)) for w in WORDS[:10]]
    path.write_text("\n".join(lines) + "\n")
    return path


def _glove_folder(folder, dim=6):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    rng = np.random.default_rng(1)
    np.save(folder / "glove_emb.npy", rng.normal(size=(12, dim)).astype(np.float32))
    pq.write_table(pa.table({"index": WORDS[:12]}), folder / "glove_index.parquet")
    return folder


@pytest.mark.parametrize("layout", ["txt", "npy+parquet"])
def test_glove_embeddings_fill_the_words_glove_knows(layout, tmp_path):
    from brewcli.glove import vectors as glove_vectors, width as glove_width
    from brewcli.models.bigru import KEY, fill_embeddings
    from brewcli.models.bigru_modeling import BrewBiGRUConfig, BrewBiGRUModel

    glove = _glove_txt(tmp_path / "glove.6d.txt") if layout == "txt" else _glove_folder(tmp_path / "glove")
    assert glove_width(str(glove), KEY) == 6
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = BrewBiGRUModel(BrewBiGRUConfig(vocab_size=len(tok), embedding_size=6, hidden_size=8))
    before = model.get_input_embeddings().weight.clone()
    known = 10 if layout == "txt" else 12
    line = fill_embeddings(model, str(glove), tok)
    assert f"GloVe vectors for {known} of {len(tok)}" in line
    vectors = glove_vectors(str(glove), set(WORDS), KEY)
    table = model.get_input_embeddings().weight
    vocab = tok.get_vocab()
    for w in WORDS[:known]:
        torch.testing.assert_close(table[vocab[w]], torch.as_tensor(vectors[w]))
    assert torch.equal(table[vocab["[CLS]"]], before[vocab["[CLS]"]])  # not a GloVe word: stays random


def test_a_glove_bigru_plans_and_trains(tmp_path):
    glove = _glove_txt(tmp_path / "glove.6d.txt")
    path = bigru_recipe("classification", tmp_path, {"preset": "BiGRU", "embeddings": str(glove),
                                                     "config": {"hidden_size": 10}})
    r = brew("distill", path, "train.max_steps=2")
    assert r.exit_code == 0, r.output
    assert "embeddings 6" in r.output and "GloVe vectors for 10 of" in r.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["hidden_size"] == 10


def test_damaged_glove_files_are_named_with_the_row(tmp_path):
    from brewcli.errors import RecipeError
    from brewcli.glove import vectors as glove_vectors, width as glove_width
    from brewcli.models.bigru import KEY

    bad = tmp_path / "glove.txt"
    bad.write_text("good 0.1 0.2 0.3\nmovie 0.1 0.2\n")
    with pytest.raises(RecipeError, match=r"glove.txt:2 has 2 numbers after the word; the lines before have 3"):
        glove_vectors(str(bad), {"movie"}, KEY)
    (tmp_path / "words.txt").write_text("not glove at all\n")
    with pytest.raises(RecipeError, match=r"words.txt:1 is not a GloVe line"):
        glove_width(str(tmp_path / "words.txt"), KEY)
    folder = _glove_folder(tmp_path / "g")
    np.save(folder / "glove_emb.npy", np.zeros((5, 6), dtype=np.float32))  # 12 words listed, 5 rows
    with pytest.raises(RecipeError, match=r"has shape \(5, 6\), but glove_index.parquet lists 12 words"):
        glove_width(str(folder), KEY)


def test_brew_train_fine_tunes_a_bigru_without_a_teacher(tmp_path, teacher_dir):
    path = bigru_recipe("classification", tmp_path, {"preset": "BiGRU", "embeddings": str(teacher_dir)})
    recipe = yaml.safe_load(path.read_text())
    for key in ("teacher", "distill"):
        recipe.pop(key)
    path.write_text(yaml.safe_dump(recipe))
    r = brew("train", path)
    assert r.exit_code == 0, r.output
    assert f"embeddings from {teacher_dir}" in r.output and "word embeddings (30 x 32)" in r.output
    assert json.loads((tmp_path / "out" / "config.json").read_text())["embedding_size"] == 32


BAD = [
    ({"preset": "BiGRU"}, {"distill__matches": ["tinybert"]},
     ["distill.matches[0] (preset tinybert)", "BiGRU, which has no attention", "hidden_mse"]),
    ({"preset": "BiGRU"}, {"distill__matches": [{"feature": "attention", "loss": "attention_mse", "teacher_layer": 1,
                                                 "student_layer": 1}]},
     ["distill.matches[0].feature", "no attention"]),
    ({"preset": "BiGRU", "embeddings": "no/such/glove.txt"}, {}, ["student.embeddings", "neither teacher, random"]),
    ({"preset": "T3-small", "embeddings": "random"}, {}, ["student", "option of the BiGRU student"]),
    ({"preset": "BiGRU", "config": {"hidden_size": 15}}, {}, ["student.config.hidden_size", "must be even"]),
    ({"preset": "BiGRU", "config": {"num_attention_heads": 4}}, {}, ["student.config.num_attention_heads",
                                                                     "not a field of the BiGRU config"]),
    ({"preset": "BiGRU", "init": "teacher-layers"}, {}, ["student", "shares no layers"]),
    ({"preset": "BiGRU", "arch": "hf"}, {}, ["student", "preset BiGRU is a bigru student"]),
    ({"arch": "bigrus"}, {}, ["student.arch", "bigru"]),
    ({"preset": "BiGRU", "embeddings": "random"}, {"teacher": None, "distill": None},
     ["student.tokenizer", "without a teacher"]),
]


@pytest.mark.parametrize("student,changes,needles", BAD, ids=[n[0] for _, _, n in BAD])
def test_what_a_bigru_cannot_do_is_refused_at_plan_time(student, changes, needles, tmp_path):
    command = "distill" if changes.get("teacher", "") is not None else "train"
    r = brew(command, bigru_recipe("classification", tmp_path, student, **changes), "--dry-run")
    assert r.exit_code == 2, r.output
    for needle in needles:
        assert needle in r.output, (needle, r.output)


def test_arch_bigru_on_a_saved_transformer_is_refused(tmp_path, teacher_dir):
    r = brew("distill", bigru_recipe("classification", tmp_path, {"model": str(teacher_dir), "arch": "bigru"}),
             "--dry-run")
    assert r.exit_code == 2 and "student.arch" in r.output and "bert model" in r.output, r.output
