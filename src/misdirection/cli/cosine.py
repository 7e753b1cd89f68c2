"""`misdirection cosine`: per-layer cosine similarity between direction files."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("cosine")
    def cosine_command(
        files: list[str] = typer.Argument(
            ..., help="Direction files (PATH or NAME=PATH), at least two, same shape."
        ),
        plot: Path = typer.Option(
            None, "--plot", help="Write a per-layer line plot (.png, .pdf, .svg)."
        ),
        csv: Path = typer.Option(None, "--csv", help="Write the cosine table as CSV."),
    ) -> None:
        """Per-layer cosine similarity of every pair of direction sets (rows = layers).

        Layer i = output of decoder block i (0-based). A layer where a direction is zero shows nan.
        """
        from rich.console import Console
        from rich.table import Table

        from misdirection.directions import DirectionSet, cosine_table
        from misdirection.errors import ConfigError

        sets: dict[str, DirectionSet] = {}
        for spec in files:
            name, path = _parse(spec)
            if name in sets:
                raise ConfigError(
                    f"two direction files are named '{name}'; name them with NAME=PATH"
                )
            sets[name] = DirectionSet.load(path)
        df = cosine_table(sets)
        if csv is not None:
            df.to_csv(csv)
        table = Table(title="per-layer cosine similarity")
        table.add_column("layer", justify="right")
        for col in df.columns:
            table.add_column(col, justify="right")
        for layer, row in df.iterrows():
            table.add_row(str(layer), *(f"{v:+.3f}" for v in row))
        Console().print(table)
        if plot is not None:
            _plot(df, plot)
            typer.echo(f"plot written to {plot}")


def _parse(spec: str) -> tuple[str, Path]:
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        return name, Path(path)
    path = Path(spec)
    return path.name.split(".")[0], path


def _plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for col in df.columns:
        ax.plot(df.index, df[col], marker="o", markersize=3, label=col)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("cosine similarity")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
