"""The field's direction formats: round trips, layer mappings, what is lost, and clear errors.

Every format is written by us and read back; the peer tools' own classes and runtimes check the
same files in tests/test_peers.py.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from misdirection import formats
from misdirection.cli import app
from misdirection.conversion import convert
from misdirection.directions import DirectionSet
from misdirection.errors import (
    ConfigError,
    DataError,
    LayerIndexError,
    MisdirectionError,
    ShapeError,
)
from misdirection.model_shape import check_fits, model_shape

N_LAYERS, WIDTH = 6, 16
META = {
    "method": "mean-diff",
    "model": "tiny-llama",
    "adapter": "organisms/rank1",
    "n_aligned": 40,
    "n_misaligned": 25,
    "split_half": [0.9] * N_LAYERS,
}


@pytest.fixture
def ours(tmp_path) -> DirectionSet:
    gen = torch.Generator().manual_seed(0)
    ds = DirectionSet(torch.randn(N_LAYERS, WIDTH, generator=gen), dict(META))
    ds.save(tmp_path / "ours.safetensors")
    return ds


def _write(ds: DirectionSet, path: Path, fmt: str, layer: int | None = None) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        formats.write(ds.directions, ds.metadata, path, fmt, layer)
    return [str(w.message) for w in caught]


def _read(path: Path | str) -> DirectionSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DirectionSet.load(path)


# ----------------------------------------------------------------------------------------------
# Round trips: ours -> format -> ours, identical in values and layer; what was lost is named


def test_gguf_round_trip_keeps_every_layer_but_0_and_all_metadata(ours, tmp_path):
    path = tmp_path / "v.gguf"
    lost = _write(ours, path, "gguf")
    assert len(lost) == 1 and "layer 0" in lost[0] and "llama.cpp" in lost[0]
    assert formats.sniff(path) == "gguf"
    back = _read(path)
    assert back.directions.shape == ours.directions.shape
    assert torch.equal(back.directions[1:], ours.directions[1:])
    assert not back.directions[0].any()
    # GGUF has free metadata: provenance, set sizes and reliability come back.
    for key in ("model", "adapter", "n_aligned", "n_misaligned", "split_half"):
        assert back.metadata[key] == META[key]
    assert back.metadata["source_format"] == "gguf"


def test_gguf_file_has_the_llama_cpp_layout(ours, tmp_path):
    from gguf import GGUFReader

    path = tmp_path / "v.gguf"
    _write(ours, path, "gguf")
    reader = GGUFReader(str(path))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    assert "controlvector.model_hint" in reader.fields
    count = reader.fields["controlvector.layer_count"]
    assert int(count.parts[count.data[0]][0]) == N_LAYERS - 1
    names = {t.name: t for t in reader.tensors}
    assert sorted(names) == sorted(f"direction.{k}" for k in range(1, N_LAYERS))
    t = names["direction.3"]
    assert t.tensor_type.name == "F32" and int(t.n_elements) == WIDTH
    assert torch.equal(torch.from_numpy(t.data.copy()), ours.directions[3])


def test_steering_vectors_round_trip_is_exact(ours, tmp_path):
    path = tmp_path / "sv.pt"
    assert _write(ours, path, "steering-vectors") == []
    obj = torch.load(path, weights_only=True)
    assert obj["layer_type"] == "decoder_block" and sorted(obj["layer_activations"]) == list(
        range(N_LAYERS)
    )
    assert formats.sniff(path) == "steering-vectors"
    back = _read(path)
    assert torch.equal(back.directions, ours.directions)
    assert back.metadata["n_misaligned"] == 25 and back.metadata["model"] == "tiny-llama"


def test_persona_vectors_round_trip_shifts_rows_by_the_embedding_row(ours, tmp_path):
    path = tmp_path / "evil_response_avg_diff.pt"
    lost = " ".join(_write(ours, path, "persona-vectors"))
    for named in ("row 0", "final-norm", "model=tiny-llama", "n_aligned=40", "split_half"):
        assert named in lost
    raw = torch.load(path, weights_only=True)
    assert raw.shape == (N_LAYERS + 1, WIDTH) and not raw[0].any()
    assert torch.equal(raw[3 + 1], ours.directions[3])  # row r = our layer r - 1
    assert formats.sniff(path) == "persona-vectors"
    with pytest.warns(UserWarning, match="after the model's final norm"):
        back = DirectionSet.load(path)
    assert torch.equal(back.directions, ours.directions)


def test_refusal_direction_round_trip_keeps_its_layer(ours, tmp_path):
    path = tmp_path / "run" / "direction.pt"
    lost = _write(ours, path, "refusal-direction", layer=3)
    assert "other 5 layers" in " ".join(lost)
    sidecar = json.loads((tmp_path / "run" / "direction_metadata.json").read_text())
    assert sidecar["layer"] == 4  # the input of block 4 = the output of block 3
    assert torch.equal(torch.load(path, weights_only=True), ours.directions[3])
    back = _read(path)
    assert torch.equal(back.directions[3], ours.directions[3]) and back.metadata["layer"] == 3
    assert back.metadata["n_aligned"] == 40  # kept in the sidecar


def test_em_organisms_round_trip_is_exact_and_names_the_lost_metadata(ours, tmp_path):
    path = tmp_path / "mean_diff.pt"
    lost = " ".join(_write(ours, path, "em-organisms"))
    for named in ("model=tiny-llama", "adapter=", "n_aligned=40", "n_misaligned=25", "split_half"):
        assert named in lost
    assert isinstance(torch.load(path, weights_only=True), list)
    assert formats.sniff(path) == "em-organisms"
    assert torch.equal(_read(path).directions, ours.directions)


def test_em_organisms_dict_of_layer_keys_reads_too(tmp_path):
    vecs = {f"layer_{i}": torch.full((4,), float(i)) for i in range(3)}
    torch.save(vecs, tmp_path / "hs.pt")
    back = _read(tmp_path / "hs.pt")
    assert back.directions[:, 0].tolist() == [0.0, 1.0, 2.0]


def test_our_plain_pt_files_still_read_as_ours(ours, tmp_path):
    torch.save(ours.directions, tmp_path / "plain.pt")
    assert formats.sniff(tmp_path / "plain.pt") is None
    assert torch.equal(DirectionSet.load(tmp_path / "plain.pt").directions, ours.directions)


def test_a_format_can_be_named_in_the_path(ours, tmp_path):
    path = tmp_path / "renamed.pt"
    _write(ours, path, "persona-vectors")
    assert formats.sniff(path) is None  # a bare [n + 1, d] tensor: only its name would tell
    back = _read(f"persona-vectors:{path}")
    assert torch.equal(back.directions, ours.directions)
    # A spec of it cannot be re-read from the bare path, so it is recorded inline.
    assert "inline" in back.reference()


def test_file_at_layer_reads_a_gguf_control_vector(ours, tmp_path):
    from misdirection.geometry.vectors import load_vector

    _write(ours, tmp_path / "v.gguf", "gguf")
    vec = load_vector(f"{tmp_path / 'v.gguf'}@2")
    assert vec.layer == 2 and torch.equal(torch.from_numpy(vec.vector).float(), ours.directions[2])


# ----------------------------------------------------------------------------------------------
# Errors, one sentence each, before any model loads


def test_a_gguf_model_is_not_a_control_vector():
    from misdirection.models import EMBEDDED_MODELS, _find_embedded_gguf

    model_file = _find_embedded_gguf(EMBEDDED_MODELS["smollm2-135m"])
    with pytest.raises(DataError, match=r"is a llama model with 30 blocks .* not a control vector"):
        DirectionSet.load(model_file)


def test_a_pt_that_is_not_a_tensor_of_the_expected_shape(tmp_path):
    torch.save(torch.zeros(4), tmp_path / "x_response_avg_diff.pt")
    with pytest.raises(ShapeError, match=r"\[n_layers \+ 1, d\] tensor .* found \(4,\)"):
        DirectionSet.load(tmp_path / "x_response_avg_diff.pt")
    (tmp_path / "direction_metadata.json").write_text('{"pos": -1, "layer": 3}')
    torch.save(torch.zeros(2, 4), tmp_path / "direction.pt")
    with pytest.raises(ShapeError, match=r"one \[d\] tensor, found \(2, 4\)"):
        DirectionSet.load(tmp_path / "direction.pt")
    torch.save({"layer_activations": {0: torch.zeros(3)}, "layer_type": "mlp"}, tmp_path / "s.pt")
    with pytest.raises(DataError, match="layer_type 'mlp'"):
        DirectionSet.load(tmp_path / "s.pt")


def test_width_and_layers_are_checked_against_the_model_config(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 64}))
    assert model_shape(str(folder))[:2] == (4, 64)
    with pytest.raises(ShapeError, match="vectors are 16 wide but model .* width 64"):
        check_fits(torch.zeros(4, 16), str(folder), "v.gguf")
    with pytest.raises(ShapeError, match="5 rows for a 4-layer model .* persona-vectors:"):
        check_fits(torch.zeros(5, 64), str(folder), "x.pt")
    with pytest.raises(
        LayerIndexError, match=r"layer 7 is out of range: .* 4 layers \(valid 0..3\)"
    ):
        check_fits(torch.zeros(4, 64), str(folder), "v.gguf", layers=[7])
    # A negative layer is refused with the same range (the library would count it from the end).
    with pytest.raises(LayerIndexError, match=r"layer -1 is out of range: .*\(valid 0..3\)"):
        check_fits(torch.zeros(4, 64), str(folder), "v.gguf", layers=[-1])


def test_a_negative_layer_is_refused_even_where_the_model_cannot_tell_its_size():
    from misdirection.model_shape import check_layers

    with pytest.raises(LayerIndexError, match="--layer -2 is not a layer: layers are 0-based"):
        check_layers("org/not-local", {"--layer": [3, -2]})
    assert check_layers("org/not-local", {"--layer": [3, 40]}) is None  # checked once loaded


def test_the_embedded_model_shape_comes_from_its_files():
    shape = model_shape("smollm2-135m")
    assert shape is not None and shape[:2] == (30, 576)


def test_gguf_cannot_hold_layer_0_alone(ours, tmp_path):
    with pytest.raises(DataError, match="cannot hold layer 0"):
        formats.write(ours.directions, ours.metadata, tmp_path / "v.gguf", "gguf", layer=0)


def test_an_unknown_format_lists_the_known_ones(ours, tmp_path):
    with pytest.raises(ConfigError, match="known: misdirection, gguf, steering-vectors"):
        formats.write(ours.directions, {}, tmp_path / "x.pt", "nope")


# ----------------------------------------------------------------------------------------------
# `misdirection convert`, with its defaults, as a new user runs it


def test_convert_lists_what_it_lost_and_checks_by_reading_back(ours, tmp_path):
    result = convert(tmp_path / "ours.safetensors", tmp_path / "v.gguf")
    assert result.target_format == "gguf" and result.verified
    assert result.layers_out == list(range(1, N_LAYERS)) and "layer 0" in result.lost[0]
    back = convert(tmp_path / "v.gguf", tmp_path / "again.safetensors")
    assert back.source_format == "gguf" and any("[0]" in n for n in back.notes)
    assert torch.equal(
        DirectionSet.load(tmp_path / "again.safetensors").directions[1:], ours.directions[1:]
    )


@pytest.mark.parametrize(
    ("out", "expect"),
    [
        ("v.gguf", "(gguf, layers 1-5)"),
        ("evil_response_avg_diff.pt", "(persona-vectors, layers 0-5)"),
        ("run/direction.pt", None),  # one layer: needs --layer
    ],
)
def test_convert_cli_with_defaults(ours, tmp_path, out, expect):
    runner = CliRunner()
    src = str(tmp_path / "ours.safetensors")
    result = runner.invoke(app, ["convert", src, str(tmp_path / out)])
    if expect is None:
        assert result.exit_code != 0 and "--layer" in str(result.exception)
        result = runner.invoke(app, ["convert", src, str(tmp_path / out), "--layer", "2"])
        expect = "(refusal-direction, layers 2)"
    assert result.exit_code == 0, result.output
    assert expect in result.output and "read back: every written layer equals" in result.output
    # ...and back to ours with defaults again.
    again = runner.invoke(app, ["convert", str(tmp_path / out), str(tmp_path / "back.safetensors")])
    assert again.exit_code == 0, again.output


def test_convert_cli_asks_which_pt_format(ours, tmp_path):
    result = CliRunner().invoke(
        app, ["convert", str(tmp_path / "ours.safetensors"), str(tmp_path / "x.pt")]
    )
    assert result.exit_code != 0 and "choose one with --to" in str(result.exception)
    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(tmp_path / "ours.safetensors"),
            str(tmp_path / "x.pt"),
            "--to",
            "em-organisms",
        ],
    )
    assert result.exit_code == 0 and "lost:" in result.output and "n_aligned=40" in result.output


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load model weights fails the test: the checks read configs and headers."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("misdirection.models.load_model", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{gguf_model}", "out.safetensors"], r"is a llama model with 30 blocks .* not a control"),
        (["narrow.safetensors", "v.gguf", "-m", "{model}"], r"8 wide but model .* width 16"),
        (["ours.safetensors", "v.gguf", "-l", "9", "-m", "{model}"], r"layer 9 is out of range"),
        (["ours.safetensors", "v.gguf", "-l", "9"], r"layer 9 is out of range: it holds 6"),
        (["x_response_avg_diff.pt", "o.safetensors"], r"\[n_layers \+ 1, d\] tensor .* \(4,\)"),
        (
            ["wide_response_avg_diff.pt", "o.safetensors", "-m", "{model}"],
            r"holds 8 layers but model .* has 6",
        ),
    ],
)
def test_convert_cli_errors_are_one_sentence_before_any_model_loads(
    ours, tmp_path, no_model_loads, args, says
):
    from misdirection.models import EMBEDDED_MODELS, _find_embedded_gguf

    folder = tmp_path / "model"
    folder.mkdir()
    config = {"model_type": "llama", "num_hidden_layers": N_LAYERS, "hidden_size": WIDTH}
    (folder / "config.json").write_text(json.dumps(config))
    DirectionSet(torch.ones(N_LAYERS, 8), {}).save(tmp_path / "narrow.safetensors")
    torch.save(torch.zeros(4), tmp_path / "x_response_avg_diff.pt")
    torch.save(torch.ones(N_LAYERS + 3, WIDTH), tmp_path / "wide_response_avg_diff.pt")
    gguf_model = str(_find_embedded_gguf(EMBEDDED_MODELS["smollm2-135m"]))
    argv = [a.format(gguf_model=gguf_model, model=folder) for a in args]
    argv = [a if a.startswith(("-", "/")) or a.isdigit() else str(tmp_path / a) for a in argv]
    result = CliRunner().invoke(app, ["convert", *argv])
    message = str(result.exception)
    assert result.exit_code != 0 and isinstance(result.exception, MisdirectionError), result.output
    assert re.search(says, message) and "\n" not in message.strip()


def test_convert_cli_to_steering_vectors_and_back_with_defaults(ours, tmp_path):
    runner = CliRunner()
    src, sv = str(tmp_path / "ours.safetensors"), str(tmp_path / "sv.pt")
    result = runner.invoke(app, ["convert", src, sv, "--to", "steering-vectors"])
    assert result.exit_code == 0, result.output
    assert "(steering-vectors, layers 0-5)" in result.output and "lost:" not in result.output
    back = runner.invoke(app, ["convert", sv, str(tmp_path / "back.safetensors")])  # recognised
    assert back.exit_code == 0 and "sv.pt (steering-vectors, layers 0-5)" in back.output
    again = _read(tmp_path / "back.safetensors")  # values, layers and our metadata all kept
    assert torch.equal(again.directions, ours.directions)
    assert all(again.metadata[k] == v for k, v in META.items())
