"""Study config validation and the cached stage store."""

from __future__ import annotations

import json

import pytest

from misdirection.errors import ConfigError
from misdirection.store import RunStore, stable_hash
from misdirection.study.config import load_config, parse_config, validate_against_model

GOOD = {
    "name": "t",
    "organisms": [
        {"name": "med", "train": {"data": "bad-medical", "recipe": "rank1-9"}},
        {"name": "sport", "train": {"data": "extreme-sports", "recipe": "all-r32"}},
    ],
    "extract": {"organisms": ["med", "sport"]},
    "steering": {"direction": "med", "layers": [10], "scales": [0, 4]},
    "ablation": {"direction": "med", "targets": ["med", "sport"]},
    "cosine": ["med", "sport"],
}


def test_good_config_parses():
    config = parse_config(GOOD, "s.yaml")
    assert config.organism("med").train.recipe == "rank1-9"
    assert config.sampling.questions == ["core"]


@pytest.mark.parametrize(
    "patch, message",
    [
        (
            {"ablation": {"direction": "med", "targets": ["nope"]}},
            "s.yaml: ablation.targets.0: unknown organism 'nope'",
        ),
        (
            {"organisms": [{"name": "med", "train": {"data": "x", "recipe": "rank2"}}]},
            "s.yaml: organisms.0.train.recipe",
        ),
        ({"organisms": [{"name": "med"}]}, "give exactly one of 'train' or 'adapter'"),
        ({"sampling": {"samples_per_paraphrase": 0}}, "s.yaml: sampling.samples_per_paraphrase"),
        ({"typo_field": 1}, "s.yaml: typo_field: Extra inputs are not permitted"),
        (
            {"cosine": ["med"], "extract": {"organisms": []}, "steering": None, "ablation": None},
            "cosine.0: organism 'med' has no direction",
        ),
    ],
)
def test_config_errors_name_the_field(patch, message):
    with pytest.raises(ConfigError) as info:
        parse_config({**GOOD, **patch}, "s.yaml")
    assert message in str(info.value)


def test_layers_checked_against_model():
    config = parse_config(
        {**GOOD, "steering": {"direction": "med", "layers": [10, 40], "scales": [1]}}, "s.yaml"
    )
    with pytest.raises(
        ConfigError, match=r"s.yaml: steering.layers.1: layer 40 is out of range .* valid 0..29"
    ):
        validate_against_model(config, n_layers=30, source="s.yaml")


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\norganisms: [\n  - oops: : :\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_store_keys_and_resume(tmp_path):
    store = RunStore(tmp_path)
    a = store.stage("sample/base", {"n": 1})
    assert not a.done
    a.start()
    assert (
        json.loads((tmp_path / "manifest.json").read_text())["stages"]["sample/base"]["status"]
        == "running"
    )
    a.finish({"rows": 3})
    again = RunStore(tmp_path).stage("sample/base", {"n": 1})
    assert again.done and again.result() == {"rows": 3}
    changed = RunStore(tmp_path).stage("sample/base", {"n": 2})
    assert not changed.done and changed.key != a.key
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})


def test_upgraded_package_does_not_reuse_stages(tmp_path, monkeypatch):
    import misdirection

    done = RunStore(tmp_path).stage("sample/base", {"n": 1})
    done.finish({"rows": 3})
    monkeypatch.setattr(misdirection, "__version__", "99.0.0")
    after_upgrade = RunStore(tmp_path).stage("sample/base", {"n": 1})
    assert after_upgrade.key != done.key and not after_upgrade.done


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_gpu_example_validates_offline():
    config = load_config(ROOT / "examples" / "qwen14b-public-organisms.yaml")
    assert config.base_model == "Qwen/Qwen2.5-14B-Instruct"
    assert all(o.adapter and o.adapter.startswith("ModelOrganismsForEM/") for o in config.organisms)
    validate_against_model(config, n_layers=48, source="qwen14b")  # Qwen2.5-14B has 48 layers


@pytest.mark.parametrize("name", ["demo.yaml", "demo-quick.yaml"])
def test_demo_configs_ship_and_match_examples(name):
    from misdirection.study.demo import DEMO_DIR

    packaged = (DEMO_DIR / name).read_text()
    assert (ROOT / "examples" / name).read_text() == packaged
    validate_against_model(load_config(DEMO_DIR / name), n_layers=30, source=name)


@pytest.mark.parametrize(("name", "per_set"), [("demo.yaml", 100), ("demo-quick.yaml", 30)])
def test_demo_configs_run_every_experiment(name, per_set):
    """Both demos run every section of the papers' workflow, with controls and enough answers."""
    from misdirection.study.demo import DEMO_DIR

    config = load_config(DEMO_DIR / name)
    assert config.extract is not None and config.extract.base  # the base direction: Figure 3
    assert set(config.extract.organisms) == {o.name for o in config.organisms}
    assert config.extract.target_per_set is not None and config.extract.target_per_set >= per_set
    assert config.steering is not None and config.steering.random_controls >= 3
    ablation = config.ablation
    assert ablation is not None and ablation.random_controls >= 3
    own = set(ablation.modes) if ablation.direction in ablation.targets else set()
    others = [t for t in ablation.targets if t != ablation.direction]
    assert others, "a transfer target"
    transfer = set(ablation.transfer_modes or ablation.modes)
    assert own | transfer == {"layerwise", "single"}
    assert config.lora is not None and config.lora.ablate_b and config.lora.b_controls >= 3
    assert len(config.cosine) >= 2 and config.geometry is not None
    assert len(config.organisms) >= 2
