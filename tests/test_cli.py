"""The command line as a user meets it: every verb's --help shows whole option names."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from misdirection.cli import app


def _verbs(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf command of the CLI with its path of names, sub-apps (data, lora) included."""
    found = []  # typer vendors its own click, so groups are recognised by their commands
    for name, command in sorted(group.commands.items()):
        if getattr(command, "commands", None) is not None:
            found += _verbs(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


VERBS = _verbs(typer.main.get_command(app))


def test_the_cli_has_its_verbs_and_groups():
    names = {" ".join(path) for path, _ in VERBS}
    assert {"train", "evaluate", "sample", "judge", "data check", "lora scalars"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_help_of_every_verb_shows_whole_option_names(columns):
    runner = CliRunner()
    for path, command in VERBS:
        result = runner.invoke(
            app, [*path, "--help"], env={"COLUMNS": str(columns)}, terminal_width=columns
        )
        assert result.exit_code == 0, (path, result.output)
        assert "…" not in result.output, (path, columns)
        for param in command.params:
            if param.param_type_name != "option":
                continue
            for name in [*param.opts, *param.secondary_opts]:
                # The whole name, not a prefix of it: "--scale" must not match "--scale-adapters".
                pattern = rf"(?<![\w-]){re.escape(name)}(?![\w-])"
                assert re.search(pattern, result.output), (" ".join(path), columns, name)


def test_version_prints_without_a_command():
    from misdirection import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"misdirection {__version__}\n"


def test_a_missing_vllm_fails_before_any_model_loads(monkeypatch, tmp_path):
    import misdirection.backends.vllm as vllm_backend
    import misdirection.models

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: "vllm is not importable (test)")

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the sampler was checked")

    monkeypatch.setattr(misdirection.models, "load_model", no_loading)
    monkeypatch.setenv("OPENAI_API_KEY", "unused")  # the openai judge builds without a call
    runner = CliRunner()
    for args in (
        ["sample", "--out", str(tmp_path / "a.parquet"), "--sampler", "vllm"],
        ["evaluate", "--out", str(tmp_path / "e"), "--sampler", "vllm", "--judge", "openai:gpt-4o"],
        ["sample", "--out", str(tmp_path / "b.parquet"), "--sampler-option", "dtype=float32"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        message = str(result.exception)
        assert (
            "vllm is not importable (test)" in message or "hf backend takes no options" in message
        ), message


@pytest.mark.embedded
def test_models_prints_the_layer_convention_whole() -> None:
    # Rich read "[i + 1]" as markup and printed "hidden_states in HF terms".
    result = CliRunner().invoke(app, ["models", "smollm2-135m"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "hidden_states[i + 1]" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["monitor", "{ckpt}", "--directions", "{d}", "--layer", "-1"], "--layer -1"),
        (["screen", "--data", "bad-medical", "--directions", "{d}", "--layer", "-1"], "--layer -1"),
        (["screen", "--data", "bad-medical", "--directions", "{d}", "--layer", "4"], "--layer 4"),
        (["train", "--data", "bad-medical", "--out", "{tmp}/o", "--layers", "1,-1"], "--layers -1"),
        (["train", "--data", "bad-medical", "--out", "{tmp}/o", "--ablate", "{d}@-1"], "-1"),
        (["train", "--data", "bad-medical", "--out", "{tmp}/o", "--steer", "{d}@5", "--scale", "1"], "5"),
        (["select-layer", "{d}", "--out", "{tmp}/o", "--layers", "0,-1"], "--layers -1"),
        (["lora", "ablate-b", "{d}", "-a", "{ckpt}", "--out", "{tmp}/o", "--source-layer", "-1"], "--source-layer -1"),
        (["lora", "converge", "{tmp}/a.csv", "-d", "{d}", "-a", "{ckpt}", "--layer", "-1"], "layer -1"),
    ],
)  # fmt: skip
def test_every_verb_that_takes_a_layer_refuses_one_outside_the_model_before_it_loads(
    tmp_path, monkeypatch, args, message
):
    import torch

    import misdirection.model_shape
    import misdirection.models
    from misdirection.direction_set import DirectionSet
    from misdirection.errors import LayerIndexError

    def no(*a: Any, **k: Any) -> Any:
        raise AssertionError("the model must not load")

    monkeypatch.setattr(misdirection.models, "load_model", no)
    monkeypatch.setattr(
        misdirection.model_shape,
        "model_shape",
        lambda spec: misdirection.model_shape.ModelShape(4, 64, "a 4-layer test config"),
    )
    d = DirectionSet(torch.randn(4, 64)).save(tmp_path / "d.safetensors")
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text("{}")
    line = [a.format(d=d, ckpt=ckpt, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, line)
    assert isinstance(result.exception, LayerIndexError | typer.BadParameter), result.output
    assert message in str(result.exception) and "valid 0..3" in str(result.exception)
