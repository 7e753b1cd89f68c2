"""Study reports: figures, markdown and a self-contained HTML page."""

from misdirection.report.render import render_report

__all__ = ["render_report"]
