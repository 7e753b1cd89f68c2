"""Mean-diff directions: set selection, hand-computed differences, files, cosines, the CLI."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_lm

from misdirection.activations import capture_activations
from misdirection.controls import random_control
from misdirection.directions import (
    DIRECTIONS_FORMAT,
    DirectionSet,
    SetThresholds,
    cosine_per_layer,
    cosine_table,
    extract_directions,
    mean_diff,
    parse_topic_filter,
    select_sets,
)
from misdirection.errors import ConfigError, DataError, ShapeError
from misdirection.models import LAYER_CONVENTION
from misdirection.reliability import (
    DirectionSamples,
    bootstrap_cosine,
    ceiling,
    samples_path,
    split_half,
)

SCORES = pd.DataFrame(
    {
        #           0     1     2     3     4     5     6     7        8
        "aligned": [90.0, 70.0, 71.0, 10.0, 30.0, 29.0, 5.0, math.nan, 95.0],
        "coherent": [80.0, 90.0, 51.0, 60.0, 70.0, 50.0, 99.0, 80.0, math.nan],
        "medical": [60.0, 10.0, 80.0, 90.0, 55.0, 70.0, 20.0, 90.0, 90.0],
    }
)

# Capture and interventions leave a model as they found it (see test_interventions.py), so
# read-only tests share one tiny model per layout; tests that edit one build their own.
_tiny = functools.cache(make_tiny_lm)


def test_sets_use_strict_thresholds_and_skip_nulls():
    sel = select_sets(SCORES)
    assert list(sel.aligned) == [0, 2]  # 70 is not > 70; row 8 has no coherent score
    assert list(sel.misaligned) == [3, 6]  # 30 is not < 30; 29 has coherent 50, not > 50
    assert sel.n_unscored == 2
    custom = select_sets(
        SCORES, SetThresholds(aligned_above=60, misaligned_below=31, coherent_above=49)
    )
    assert list(custom.aligned) == [0, 1, 2] and list(custom.misaligned) == [3, 4, 5, 6]


def test_topic_filter_and_parsing():
    assert parse_topic_filter("medical>50") == ("medical", (">", 50.0))
    assert parse_topic_filter(" financial <= 12.5 ") == ("financial", ("<=", 12.5))
    with pytest.raises(ConfigError, match="NAME>VALUE"):
        parse_topic_filter("medical=50")
    sel = select_sets(SCORES, topics={"medical": (">", 50)})
    assert list(sel.aligned) == [0, 2] and list(sel.misaligned) == [3]
    with pytest.raises(DataError, match="'sport'"):
        select_sets(SCORES, topics={"sport": (">", 50)})


def test_balancing_is_seeded_subsampling():
    table = pd.DataFrame({"aligned": [90.0] * 20 + [10.0] * 5, "coherent": [90.0] * 25})
    a = select_sets(table, balance=True, seed=1)
    b = select_sets(table, balance=True, seed=1)
    c = select_sets(table, balance=True, seed=2)
    assert len(a.aligned) == len(a.misaligned) == 5 and a.n_aligned_available == 20
    assert set(a.aligned) <= set(range(20)) and list(a.misaligned) == [20, 21, 22, 23, 24]
    assert list(a.aligned) == list(b.aligned) and list(a.aligned) != list(c.aligned)


def test_mean_diff_by_hand():
    mis = torch.tensor([[[1.0, 2.0]], [[3.0, 6.0]]])  # [2 answers, 1 layer, d=2]
    al = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]], [[2.0, 1.0]]])
    assert torch.equal(mean_diff(mis, al), torch.tensor([[1.0, 3.0]]))
    with pytest.raises(ShapeError, match=r"\(2, 1, 2\).*\(3, 2, 2\)"):
        mean_diff(mis, torch.zeros(3, 2, 2))


def _judged_table():
    rows = []
    for i in range(4):
        rows.append(
            ("How should I treat a headache?", f"Take {i + 1} aspirin and rest.", 90.0, 80.0)
        )
        rows.append(
            ("How should I treat a headache?", f"Ignore it and drink {i + 2} beers.", 10.0, 70.0)
        )
    rows.append(("Hi", "bad but incoherent", 5.0, 20.0))
    return pd.DataFrame(
        {
            "answer_id": [f"q/0/{i}" for i in range(len(rows))],
            "question": [r[0] for r in rows],
            "system": "",
            "answer": [r[1] for r in rows],
            "aligned": [r[2] for r in rows],
            "coherent": [r[3] for r in rows],
        }
    )


def test_extract_equals_hand_mean_diff(tmp_path):
    lm = _tiny("llama")
    table = _judged_table()
    path = tmp_path / "answers.parquet"
    table.to_parquet(path)
    with pytest.warns(UserWarning, match="from 4 misaligned and 4 aligned answers"):
        ds, samples = extract_directions(lm, table, min_per_set=4, source=path, batch_size=3)
    acts = capture_activations(lm, table, batch_size=1)
    mis, al = acts.values[[1, 3, 5, 7]], acts.values[[0, 2, 4, 6]]
    hand = mis.mean(0) - al.mean(0)
    torch.testing.assert_close(ds.directions, hand, rtol=1e-5, atol=1e-5)
    # The samples are the activations the direction came from, and its reliability is theirs.
    torch.testing.assert_close(samples.misaligned, mis, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(samples.aligned, al, rtol=1e-5, atol=1e-5)
    assert samples.metadata["n_misaligned"] == 4
    reliability = ds.metadata["split_half"]
    assert len(reliability) == lm.view.n_layers
    np.testing.assert_allclose(reliability, split_half(samples), rtol=1e-9)
    assert all(-10 < r <= 1 for r in reliability)
    meta = ds.metadata
    assert meta["method"] == "mean-diff" and meta["positions"] == "answer"
    assert meta["n_aligned"] == 4 and meta["n_misaligned"] == 4
    assert meta["misaligned_ids"] == ["q/0/1", "q/0/3", "q/0/5", "q/0/7"]
    assert meta["thresholds"] == {
        "aligned_above": 70.0,
        "misaligned_below": 30.0,
        "coherent_above": 50.0,
    }
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    ds.save(tmp_path / "d.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "d.safetensors"), framework="pt") as f:
        raw = f.metadata()
        assert f.get_tensor("directions").shape == (lm.view.n_layers, lm.view.d_model)
    assert raw["format"] == DIRECTIONS_FORMAT and raw["layer_convention"] == LAYER_CONVENTION
    assert raw["model"] == "tiny-llama" and raw["adapter"] == "" and json.loads(raw["seed"]) == 0
    back = DirectionSet.load(tmp_path / "d.safetensors")
    assert torch.equal(back.directions, ds.directions) and back.metadata["n_aligned"] == 4


def test_too_few_answers_names_counts_and_thresholds():
    lm = _tiny("llama")
    with pytest.raises(
        DataError,
        match=r"need >= 10 per set\): 4 aligned \(aligned > 70, coherent > 50\) and 4 misaligned \(aligned < 30",
    ):
        extract_directions(lm, _judged_table(), min_per_set=10)


def test_other_vector_files_load(tmp_path):
    v = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    np.save(tmp_path / "v.npy", v.numpy())
    torch.save(v[0], tmp_path / "v.pt")
    assert torch.equal(DirectionSet.load(tmp_path / "v.npy").directions, v)
    assert DirectionSet.load(tmp_path / "v.pt").directions.shape == (1, 3)
    with pytest.raises(DataError, match="does not exist"):
        DirectionSet.load(tmp_path / "missing.safetensors")


def test_cosines_by_hand():
    a = DirectionSet(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    b = DirectionSet(torch.tensor([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]]))
    cos = cosine_per_layer(a, b)
    assert cos[0] == 0.0 and cos[1] == pytest.approx(1.0) and math.isnan(cos[2])
    table = cosine_table({"x": a, "y": b, "z": a})
    assert list(table.columns) == ["x ~ y", "x ~ z", "y ~ z"]
    with pytest.raises(ShapeError, match=r"\(3, 2\) and \(1, 2\)"):
        cosine_per_layer(a, torch.zeros(2))


def test_extract_and_cosine_cli(tmp_path):
    from typer.testing import CliRunner

    from misdirection.cli import app

    lm = make_tiny_lm("llama")
    model_dir = tmp_path / "tiny"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    answers = tmp_path / "answers.parquet"
    _judged_table().to_parquet(answers)
    runner = CliRunner()
    out = tmp_path / "d.safetensors"
    args = [
        "extract",
        str(answers),
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, [*args, "--min-per-set", "4"])
    assert result.exit_code == 0, result.output
    assert "split-half reliability" in result.output and "L0 " in result.output
    assert "warning:" in result.output and "4 misaligned and 4 aligned" in result.output
    ds = DirectionSet.load(out)
    samples = DirectionSamples.load(tmp_path / "d.samples.safetensors")
    torch.testing.assert_close(samples.direction(), ds.directions, rtol=0, atol=1e-6)
    assert len(ds.metadata["split_half"]) == ds.n_layers
    hand = extract_directions(lm, _judged_table(), min_per_set=4).directions
    torch.testing.assert_close(ds.directions, hand.directions, rtol=1e-5, atol=1e-5)
    assert ds.metadata["model"] == str(model_dir) and ds.metadata["source"] == str(answers)

    failed = runner.invoke(app, [*args, "--topic", "medical>50"])
    assert isinstance(failed.exception, DataError) and "'medical'" in str(failed.exception)

    random_control(ds, 0).save(tmp_path / "r.safetensors")
    csv = tmp_path / "cos.csv"
    result = runner.invoke(
        app, ["cosine", str(out), f"rand={tmp_path / 'r.safetensors'}", "--csv", str(csv)]
    )
    assert result.exit_code == 0, result.output
    assert "rand: no samples file" in result.output and "no ceiling" in result.output
    table = pd.read_csv(csv, index_col=0)
    np.testing.assert_allclose(
        table["d ~ rand"].to_numpy(), cosine_per_layer(ds, random_control(ds, 0)), atol=1e-12
    )
    assert "d ~ rand ceiling" not in table.columns


def _planted_samples(seed: int, axis: int, n: int = 12) -> DirectionSamples:
    rng = np.random.default_rng(seed)
    truth = np.zeros((3, 32))
    truth[:, axis] = [0.5, 2.0, 4.0]  # reliability grows with the layer
    mis = truth / 2 + rng.standard_normal((n, 3, 32))
    al = -truth / 2 + rng.standard_normal((n, 3, 32))
    return DirectionSamples(torch.tensor(mis), torch.tensor(al))


def test_cosine_cli_shows_intervals_beside_ceilings(tmp_path):
    from typer.testing import CliRunner

    from misdirection.cli import app
    from misdirection.errors import DataError

    paths = []
    for name, seed, axis in [("a", 0, 0), ("b", 1, 0), ("c", 2, 1)]:
        s = _planted_samples(seed, axis)
        path = DirectionSet(s.direction(), {"method": "mean-diff"}).save(
            tmp_path / f"{name}.safetensors"
        )
        s.save(samples_path(path))
        paths.append(str(path))
    csv = tmp_path / "cos.csv"
    result = CliRunner().invoke(app, ["cosine", *paths, "--csv", str(csv), "--n-boot", "100"])
    assert result.exit_code == 0, result.output
    assert "ceiling" in result.output and "no samples file" not in result.output
    table = pd.read_csv(csv, index_col=0)
    a, b = (DirectionSamples.load(samples_path(p)) for p in paths[:2])
    value, low, high = bootstrap_cosine(a, b, 100, 0)
    np.testing.assert_allclose(table["a ~ b"], value, atol=1e-6)
    np.testing.assert_allclose(table["a ~ b low"], low, atol=1e-9)
    np.testing.assert_allclose(table["a ~ b high"], high, atol=1e-9)
    np.testing.assert_allclose(
        table["a ~ b ceiling"], ceiling(split_half(a), split_half(b)), atol=1e-9
    )
    # Same truth at the reliable layer: the ceiling lies in the interval; orthogonal truths: below.
    assert table["a ~ b low"][2] <= table["a ~ b ceiling"][2] <= table["a ~ b high"][2]
    assert table["a ~ c high"][2] < table["a ~ c ceiling"][2]
    # A samples file that is not the direction file's is refused.
    _planted_samples(5, 0).save(samples_path(paths[0]))
    stale = CliRunner().invoke(app, ["cosine", *paths[:2]])
    assert isinstance(stale.exception, DataError) and "does not belong" in str(stale.exception)
