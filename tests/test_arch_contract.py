"""The architecture seam's contract, for every registered arch and the families it serves (design.md): build, load,
a weight-free meta copy with the same parameters, widths that match the model, a run to every feature kind the arch
offers for that family (with the layers and shapes the kind says), and save then load giving the same outputs. A new
arch gets these checks by adding its cases to CASES."""

from __future__ import annotations

import pytest
import torch

from brewcli.models.arch import ARCHS, HEADS
from brewcli.models.features import FEATURE_KINDS, Needs
from brewcli.models.hooks import hook_problem
from brewcli.models.side import Side
from brewcli.tasks import TASKS


def _bert():
    from transformers import BertConfig

    return BertConfig(vocab_size=40, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=31,
                      max_position_embeddings=32, num_labels=3)


def _distilbert():
    from transformers import DistilBertConfig

    return DistilBertConfig(vocab_size=40, dim=24, n_layers=2, n_heads=4, hidden_dim=31, max_position_embeddings=32,
                            num_labels=3)


def _llama():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=40, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=31, max_position_embeddings=32, num_labels=3, pad_token_id=0)


def _bigru():
    from brewcli.models.bigru import register
    from brewcli.models.bigru_modeling import BrewBiGRUConfig

    register()
    return BrewBiGRUConfig(vocab_size=40, embedding_size=16, hidden_size=24, num_hidden_layers=2, num_labels=3)


CASES = [("hf", _bert), ("hf", _distilbert), ("hf", _llama), ("bigru", _bigru)]  # (arch, a tiny config it serves)
IDS = ["hf-bert", "hf-distilbert", "hf-llama", "bigru"]
HEADS_OF = {"bigru": 0}  # attention heads of each case (4 unless named): a BiGRU has none
TASK_OF_HEAD: dict = {}  # the first task registered with each head (none: general)
for _task in (TASKS.get(n) for n in TASKS.names()):
    TASK_OF_HEAD.setdefault(_task.head, _task)


def _served(arch, config, head):
    """Skip a head the case's model cannot take at all (a causal-LM head on an encoder or a BiGRU)."""
    if not arch.serves(config, head):
        pytest.skip(f"{type(config).__name__} takes no {head} head (a plan refuses it: test_causal.py)")


def _config(make, head):
    """The config with the head's size set as a plan sets it (task.configure)."""
    config, task = make(), TASK_OF_HEAD[head]
    task.configure(config, ["a", "b", "c"] if task.has_classes else None)
    return config


def _inputs():
    ids = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 10, 11, 3, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _offered(config, layers: int, heads: int) -> Needs:
    """Every layer of every kind this family can give (hooked kinds where the seam can hook them; hidden states only
    without attention)."""
    kinds = [k for k in FEATURE_KINDS.names() if (heads or FEATURE_KINDS.get(k).layout == "tok")
             and (FEATURE_KINDS.get(k).source == "outputs" or hook_problem(config, k) is None)]
    return Needs(logits=True, layers={k: range(FEATURE_KINDS.get(k).first_layer, layers + 1) for k in kinds})


def test_every_arch_has_cases():
    assert set(ARCHS.names()) <= {name for name, _ in CASES}
    assert set(HEADS) == set(TASK_OF_HEAD), "every head is some task's, and every task's head is known"


@pytest.mark.parametrize("arch_name,make", CASES, ids=IDS)
@pytest.mark.parametrize("head", HEADS)
def test_build_meta_widths_and_has_head(arch_name, make, head):
    arch, config = ARCHS.get(arch_name), _config(make, head)
    _served(arch, config, head)
    torch.manual_seed(0)
    model = arch.build(config, head)
    meta = arch.meta(config, head)
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert {k: p.shape for k, p in meta.named_parameters()} == {k: p.shape for k, p in model.named_parameters()}
    w = arch.widths(config)
    assert (w.layers, w.hidden, w.heads) == (2, 24, HEADS_OF.get(arch_name, 4))
    assert arch.has_head(config, "none")  # any model serves a head-less task
    assert not arch.has_head(config, head) or head == "none"  # a bare config names no trained head
    assert arch.head_name(head)


@pytest.mark.parametrize("arch_name,make", CASES, ids=IDS)
@pytest.mark.parametrize("head", HEADS)
def test_run_gives_every_offered_kind_and_save_load_keeps_outputs(arch_name, make, head, tmp_path):
    arch, config = ARCHS.get(arch_name), _config(make, head)
    _served(arch, config, head)
    task = TASK_OF_HEAD[head]
    torch.manual_seed(0)
    model = arch.build(config, head, attention="eager").eval()
    w = arch.widths(config)
    needs = _offered(config, w.layers, w.heads)
    with torch.no_grad():
        f = arch.run(model, _inputs(), needs, task)
    b, n = _inputs()["input_ids"].shape
    for kind_name, layers in needs.layers.items():
        kind = FEATURE_KINDS.get(kind_name)
        assert sorted(f.layers[kind_name]) == sorted(layers), kind_name
        shape = {"tok": (b, n, kind.width(w)), "att": (b, kind.width(w), n, n)}[kind.layout]
        assert all(tuple(x.shape) == shape for x in f.layers[kind_name].values()), kind_name
    arch.save(model, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    side = Side("student", "student", config, head, ref=str(tmp_path), arch_name=arch_name)
    again = side.load(attention="eager").eval()
    with torch.no_grad():
        g = side.run(again, _inputs(), needs, task)
    for kind_name in needs.layers:
        for layer, x in f.layers[kind_name].items():
            torch.testing.assert_close(g.at(kind_name, layer), x, msg=f"{kind_name} {layer}")
    if f.logits is not None:
        torch.testing.assert_close(g.logits, f.logits)
    as_saved = arch.load(str(tmp_path), None, head)  # with the folder's own config, as brew eval loads a run
    assert arch.has_head(as_saved.config, head)  # what it saved names its head


def test_a_side_without_weights_is_built_from_its_config():
    side = Side("student", "student", _bert(), "sequence")
    torch.manual_seed(0)
    a = side.load()
    torch.manual_seed(0)
    b = ARCHS.get("hf").build(_bert(), "sequence")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
