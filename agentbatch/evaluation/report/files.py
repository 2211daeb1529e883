"""Write a report folder: report.md, report.html and metrics.json (the overall numbers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentbatch.evaluation.metrics import overall
from agentbatch.evaluation.report.content import Report, compare_report, eval_report
from agentbatch.evaluation.report.html import to_html
from agentbatch.evaluation.report.markdown import to_markdown

if TYPE_CHECKING:
    from agentbatch.evaluation.results import CompareResult, EvalResult


def write_eval_report(result: EvalResult, folder: Path) -> list[Path]:
    payload = {
        "job": result.job.name,
        "endpoint": result.endpoint,
        "metrics": overall(result.metrics),
    }
    return _write(eval_report(result), folder, payload)


def write_compare_report(result: CompareResult, folder: Path) -> list[Path]:
    payload = {
        "a": {
            "variant": result.a.variant,
            "endpoint": result.a.endpoint,
            "metrics": overall(result.a.metrics),
        },
        "b": {
            "variant": result.b.variant,
            "endpoint": result.b.endpoint,
            "metrics": overall(result.b.metrics),
        },
        "comparison": result.comparison.summary.to_pylist(),
        "disagreements": result.comparison.disagreements,
    }
    return _write(compare_report(result), folder, payload)


def _write(report: Report, folder: Path, payload: dict[str, Any]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        folder / "report.md": to_markdown(report),
        folder / "report.html": to_html(report),
        folder / "metrics.json": json.dumps(payload, indent=2, default=str) + "\n",
    }
    for path, text in files.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return list(files)
