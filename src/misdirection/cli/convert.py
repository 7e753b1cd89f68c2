"""`misdirection convert`: a direction file from one format to another (ours, GGUF control vectors,
steering-vectors, persona_vectors, refusal_direction, model-organisms-for-EM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

FORMATS_HELP = (
    "misdirection (ours, .safetensors), gguf (llama.cpp / repeng control vector), steering-vectors, "
    "persona-vectors, refusal-direction, em-organisms"
)


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert_command(
        source: Annotated[
            str, typer.Argument(help="Direction file to read (FORMAT:PATH names its format).")
        ],
        out: Annotated[Path, typer.Argument(help="File to write.")],
        source_format: Annotated[
            str | None,
            typer.Option("--from", help=f"Format of SOURCE (default: recognised). {FORMATS_HELP}."),
        ] = None,
        to: Annotated[
            str | None,
            typer.Option(
                "--to",
                help="Format of OUT (default: from its name: .safetensors ours, .gguf control "
                "vector, *_response_avg_diff.pt persona-vectors, direction.pt refusal-direction).",
            ),
        ] = None,
        layer: Annotated[
            int | None,
            typer.Option(
                "--layer", "-l", min=0, help="Keep this layer only (ours: block output, 0-based)."
            ),
        ] = None,
        model: Annotated[
            str | None,
            typer.Option(
                "--model",
                "-m",
                help="Check the vectors fit this model (width, layers) from its config or GGUF "
                "header, without loading it.",
            ),
        ] = None,
    ) -> None:
        """Convert a direction file, mapping each format's layer index onto ours (layer i = output
        of decoder block i, 0-based); what OUT's format cannot carry is listed, and OUT is read
        back and compared with SOURCE before this returns."""
        from misdirection.conversion import convert

        result = convert(source, out, source_format=source_format, to=to, layer=layer, model=model)
        typer.echo(
            f"{result.source} ({result.source_format}, layers {_span(result.layers_in)}) -> "
            f"{', '.join(result.written)} ({result.target_format}, layers {_span(result.layers_out)})"
        )
        typer.echo(f"  read:  {result.layer_map_in}")
        typer.echo(f"  wrote: {result.layer_map_out}")
        for line in result.notes:
            typer.echo(f"  note:  {line}")
        for line in result.lost:
            typer.echo(f"  lost:  {line}")
        typer.echo("  read back: every written layer equals the source exactly")


def _span(layers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7`` (our layer numbers)."""
    if not layers:
        return "none"
    parts, start = [], layers[0]
    for prev, cur in zip(layers, [*layers[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur if cur is not None else start
    return ", ".join(parts)
