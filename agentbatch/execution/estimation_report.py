"""Print an estimate: a table for people, `--json` for programs."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentbatch.execution.estimation import Estimate, Interval


def print_estimate(found: Estimate, *, as_json: bool = False) -> None:
    if as_json:
        sys.stdout.write(json.dumps(found.as_dict(), indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"agentbatch estimate: {found.job}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows: list[tuple[str, str]] = [
        ("target", f"{found.target} ({found.strategy})"),
        ("selected", f"{found.selected:,}"),
        ("skipped", f"{found.skipped:,} (the output table holds them)"),
        ("reusable", f"{found.reusable:,} (answered from the checkpoint, not sent)"),
        ("to send", f"{found.to_send:,} (rows the next run would send, before this sample)"),
        (
            "sample",
            f"{found.sampled:,} sent for real and kept: {found.sample_ok:,} ok, "
            f"{found.sample_errors:,} error(s)",
        ),
    ]
    if found.commonest_error:
        rows.append(("commonest error", _clip(found.commonest_error)))
    rows += [
        ("input tokens / row", _interval(found.input_tokens_per_row)),
        ("output tokens / row", _interval(found.output_tokens_per_row)),
        ("latency", _ms(found.latency_ms, found.p95_latency_ms)),
        ("concurrency", _concurrency(found)),
        (
            "remaining",
            f"{found.remaining:,} row(s) after the sample"
            + (
                f", {found.sample_sent_again:,} of them sampled rows that failed and are sent again"
                if found.sample_sent_again
                else ""
            ),
        ),
    ]
    if found.sample_errors and found.projected_errors is not None:
        rows.append(("expected to fail", _interval(found.projected_errors, digits=0)))
    rows += [
        ("projected tokens", _interval(found.projected_tokens)),
        ("  input", _interval(found.projected_input_tokens)),
        ("  output", _interval(found.projected_output_tokens)),
    ]
    if found.sample_errors and found.projected_tokens_all_answered is not None:
        rows.append(
            ("  if failed rows cost as answered", _interval(found.projected_tokens_all_answered))
        )
    rows += [
        ("projected wall time", _wall(found)),
    ]
    if found.price is not None:
        rows += [
            (
                "price / 1M tokens",
                f"input {found.price['input_per_million']:g}, "
                f"output {found.price['output_per_million']:g}",
            ),
            ("projected cost", _interval(found.projected_cost, digits=4)),
        ]
        if found.sample_errors and found.projected_cost_all_answered is not None:
            rows.append(
                (
                    "  if failed rows cost as answered",
                    _interval(found.projected_cost_all_answered, digits=4),
                )
            )
        rows += [
            ("sample cost", "" if found.sample_cost is None else f"{found.sample_cost:,.4g}"),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for note in found.notes:
        console.print(f"note: {note}", highlight=False)


def _interval(value: Interval | None, digits: int = 1) -> str:
    if value is None:
        return "unknown"
    if digits == 0:
        return f"{value.mean:,.0f} (95%: {value.low:,.0f} - {value.high:,.0f})"
    if digits > 1:
        return f"{value.mean:,.{digits}g} (95%: {value.low:,.{digits}g} - {value.high:,.{digits}g})"
    return f"{value.mean:,.{digits}f} (95%: {value.low:,.{digits}f} - {value.high:,.{digits}f})"


def _ms(mean: float | None, p95: float | None) -> str:
    if mean is None:
        return "unknown"
    return f"mean {mean:,.1f} ms" + (f", p95 {p95:,.1f} ms" if p95 is not None else "")


def _concurrency(found: Estimate) -> str:
    if found.concurrency is None:
        return found.concurrency_basis
    return f"{found.concurrency:,} ({found.concurrency_basis})"


def _wall(found: Estimate) -> str:
    if found.projected_wall_s is None:
        return "unknown"
    text = f"{found.projected_wall_s:,.1f} s (calls)"
    if found.projected_wall_s_high is not None:
        text += (
            f"; up to {found.projected_wall_s_high:,.1f} s if the agent takes no more than the "
            f"sample's {found.sample_concurrency:,} calls at once"
        )
    return text


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
