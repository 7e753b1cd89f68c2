"""`misdirection cosine`: per-layer cosine similarity between direction files, beside its ceiling.

When both directions of a pair have a samples file (``<stem>.samples.safetensors``, written by
``misdirection extract``), the pair's cosine gets a bootstrap interval (answers resampled within
each set) and its noise ceiling: the cosine the two would show if their true directions were
identical, from their split-half reliabilities (:mod:`misdirection.reliability`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer


@dataclass
class _PairStats:
    low: Any
    high: Any
    ceiling: Any


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
        n_boot: int = typer.Option(
            200, "--n-boot", help="Bootstrap resamples of the cosine intervals."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the splits."),
    ) -> None:
        """Per-layer cosine similarity of every pair of direction sets (rows = layers).

        Layer i = output of decoder block i (0-based). A layer where a direction is zero shows nan.
        With samples files for both directions of a pair: the cosine's 95% bootstrap interval and
        its ceiling, sqrt(reliability_a * reliability_b) from split-half reliabilities.
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
        samples, missing = _load_samples(sets)
        stats = _pair_stats(sets, samples, n_boot, seed)
        out = df.copy()
        for pair, pair_stats in stats.items():
            out[f"{pair} low"], out[f"{pair} high"] = pair_stats.low, pair_stats.high
            out[f"{pair} ceiling"] = pair_stats.ceiling
        if csv is not None:
            out.to_csv(csv)
        table = Table(
            title="per-layer cosine similarity",
            caption="cosine [95% bootstrap interval] / ceiling (the cosine of identical true "
            "directions under this noise)"
            if stats
            else None,
        )
        table.add_column("layer", justify="right")
        for col in df.columns:
            table.add_column(col, justify="right")
        for layer, row in df.iterrows():
            cells = []
            for col, v in row.items():
                st = stats.get(str(col))
                i = int(layer)
                cells.append(
                    f"{v:+.3f} [{st.low[i]:+.2f}, {st.high[i]:+.2f}] / {st.ceiling[i]:.2f}"
                    if st is not None
                    else f"{v:+.3f}"
                )
            table.add_row(str(layer), *cells)
        console = Console()
        console.print(table)
        for name, path in missing.items():
            console.print(f"{name}: no samples file ({path}): no ceiling")
        if plot is not None:
            _plot(df, stats, plot)
            typer.echo(f"plot written to {plot}")


def _load_samples(sets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The samples of each direction that has a samples file, and the expected paths of the rest."""
    import torch

    from misdirection.errors import DataError
    from misdirection.reliability import DirectionSamples, samples_path

    found: dict[str, Any] = {}
    missing: dict[str, Path] = {}
    for name, ds in sets.items():
        path = samples_path(ds.path) if ds.path else None
        if path is None or not path.is_file():
            missing[name] = path if path is not None else Path("<none>")
            continue
        s = DirectionSamples.load(path)
        scale = float(ds.directions.abs().max()) or 1.0
        if s.direction().shape != ds.directions.shape or not torch.allclose(
            s.direction(), ds.directions, rtol=0, atol=1e-4 * scale
        ):
            raise DataError(
                f"samples file {path} does not belong to direction file {ds.path}: its mean "
                f"difference differs (re-run `misdirection extract` to write both)"
            )
        found[name] = s
    return found, missing


def _pair_stats(
    sets: dict[str, Any], samples: dict[str, Any], n_boot: int, seed: int
) -> dict[str, _PairStats]:
    from misdirection.reliability import bootstrap_cosine, ceiling, split_half

    reliability = {name: split_half(s, seed=seed) for name, s in samples.items()}
    names = list(sets)
    out: dict[str, _PairStats] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a in samples and b in samples:
                _, low, high = bootstrap_cosine(samples[a], samples[b], n_boot, seed)
                out[f"{a} ~ {b}"] = _PairStats(low, high, ceiling(reliability[a], reliability[b]))
    return out


def _parse(spec: str) -> tuple[str, Path]:
    if "=" in spec and not Path(spec).exists():
        name, _, file = spec.partition("=")
        return name, Path(file)
    path = Path(spec)
    return path.name.split(".")[0], path


def _plot(df: Any, stats: dict[str, _PairStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for col in df.columns:
        (line,) = ax.plot(df.index, df[col], marker="o", markersize=3, label=col)
        st = stats.get(str(col))
        if st is not None:
            ax.fill_between(df.index, st.low, st.high, color=line.get_color(), alpha=0.2)
            ax.plot(
                df.index,
                st.ceiling,
                linestyle="--",
                color=line.get_color(),
                linewidth=1,
                label=f"{col} ceiling",
            )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer (output of decoder block, 0-based)")
    ax.set_ylabel("cosine similarity")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
