"""Score the rows an evaluation scores (for each key of the current selection, the output row with
the current request fingerprint, with the current source columns: `evaluated_rows.sql`): the
per-row scores table.

Columns: the source key, the expected and group columns (when set), `response` (as text: a
structured answer as JSON), `agent_error`, then for each scorer `<name>` (DOUBLE, NULL when not
scored) and `<name>_error` (STRING, why a row could not be scored). A bad row never stops the
evaluation: its problem is a value in its `_error` column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentbatch.evaluation.scorers import JudgeReply, JudgeScorer, RowScorer, Score, build_scorer
from agentbatch.evaluation.text import preview
from agentbatch.spec.evaluation import Evaluation

if TYPE_CHECKING:
    import pyarrow as pa

    from agentbatch.spec.models import Job

# The expected column doubles as the group column when it looks like a label.
AUTO_GROUP_MAX_VALUES = 25
# Output rows scored at a time (as Python dicts).
SCORE_CHUNK_ROWS = 5_000


@dataclass(frozen=True)
class ScorerInfo:
    """What the metrics, comparison and report need to know about a scorer."""

    name: str
    kind: str
    binary: bool
    higher_is_better: bool
    unit: str
    bounds: tuple[float, float] | None

    @classmethod
    def of(cls, scorer: RowScorer) -> ScorerInfo:
        return cls(
            scorer.name,
            scorer.kind,
            scorer.binary,
            scorer.higher_is_better,
            scorer.unit,
            scorer.bounds,
        )


@dataclass(frozen=True)
class Scored:
    """A scores table and what its columns mean."""

    table: pa.Table
    scorers: tuple[ScorerInfo, ...]
    key: str
    expected: str | None
    group_by: str | None

    def values(self, scorer: str) -> list[float | None]:
        values: list[float | None] = self.table.column(scorer).to_pylist()
        return values


def build_scorers(job: Job) -> list[RowScorer]:
    evaluation = _evaluation(job)
    return [
        build_scorer(entry, evaluation.expected, job.source.key) for entry in evaluation.scorers
    ]


def score_table(
    output: pa.Table,
    job: Job,
    *,
    judge_replies: Mapping[str, Mapping[Any, JudgeReply]] | None = None,
    scorers: list[RowScorer] | None = None,
) -> Scored:
    """Score the rows of `output` with the job's scorers: one row per key, the expected and group
    columns as the current source holds them (`agentbatch.evaluation.tables.read_evaluated_rows`).

    `judge_replies` maps each llm_judge scorer's name to its replies by row key (from
    `agentbatch.evaluation.judge`); a judge without replies scores every row as an error.
    """
    import pyarrow as pa

    evaluation = _evaluation(job)
    key = _column_name(output, job.source.key)
    expected = _column_name(output, evaluation.expected) if evaluation.expected else None
    scorers = scorers if scorers is not None else build_scorers(job)
    for scorer in scorers:
        if isinstance(scorer, JudgeScorer):
            scorer.replies = (judge_replies or {}).get(scorer.name, {})
    policy = evaluation.agent_errors
    # Chunk by chunk: only one chunk's rows are Python dicts at a time (a whole output's were
    # about 1 KB a row), the scores are kept as Arrow columns.
    chunks = [
        _score_chunk(batch, scorers, policy)
        for batch in output.to_batches(max_chunksize=SCORE_CHUNK_ROWS)
    ]
    group_by = _group_column(output, evaluation, expected)
    columns: dict[str, pa.Array | pa.ChunkedArray] = {key: output.column(key)}
    for extra in (expected, group_by):
        if extra is not None and extra not in columns:
            columns[extra] = output.column(extra)
    names = ["response", "agent_error"]
    for scorer in scorers:
        names += [scorer.name, f"{scorer.name}_error"]
    scores = {scorer.name for scorer in scorers}
    for name in names:
        kind = pa.float64() if name in scores else pa.string()
        columns[name] = pa.chunked_array([chunk[name] for chunk in chunks], kind)
    return Scored(
        table=pa.table(columns),
        scorers=tuple(ScorerInfo.of(s) for s in scorers),
        key=key,
        expected=expected,
        group_by=group_by,
    )


def _score_chunk(
    batch: pa.RecordBatch, scorers: list[RowScorer], policy: str
) -> dict[str, pa.Array]:
    """The scores columns of one chunk of the output."""
    import pyarrow as pa

    rows = batch.to_pylist()
    values: dict[str, list[float | None]] = {s.name: [] for s in scorers}
    errors: dict[str, list[str | None]] = {s.name: [] for s in scorers}
    for row in rows:
        failed = row.get("error") is not None
        for scorer in scorers:
            score = _score_row(scorer, row, failed, policy)
            values[scorer.name].append(score.value)
            errors[scorer.name].append(score.error)
    columns = {
        "response": pa.array([_response_text(r.get("response")) for r in rows], pa.string()),
        "agent_error": pa.array([r.get("error") for r in rows], pa.string()),
    }
    for scorer in scorers:
        columns[scorer.name] = pa.array(values[scorer.name], pa.float64())
        columns[f"{scorer.name}_error"] = pa.array(errors[scorer.name], pa.string())
    return columns


def _score_row(scorer: RowScorer, row: Mapping[str, Any], failed: bool, policy: str) -> Score:
    missing = scorer.missing_expected(row)  # ungradable whether or not the agent answered
    if missing is not None:
        return missing
    if failed and scorer.judges_answer:
        if policy == "skip":
            return Score()
        if scorer.lowest is None:
            return Score(error=f"the agent failed: {preview(row.get('error'), 80)}")
        return Score(scorer.lowest)
    try:
        return scorer.score(row)
    except Exception as err:  # one row's surprise must not stop the evaluation
        return Score(error=f"{type(err).__name__}: {err}")


def _evaluation(job: Job) -> Evaluation:
    if job.evaluation is None:
        from agentbatch.errors import SpecError

        raise SpecError(f"job {job.name!r} has no `evaluation:` block")
    return job.evaluation


def _column_name(table: pa.Table, name: str) -> str:
    """The table's spelling of a column (engines may change case)."""
    for column in table.column_names:
        if column.lower() == name.lower():
            return str(column)
    from agentbatch.errors import EngineError

    raise EngineError(
        f"the output table has no column {name!r} (columns: {', '.join(table.column_names)})"
    )


def _group_column(table: pa.Table, evaluation: Evaluation, expected: str | None) -> str | None:
    if evaluation.group_by is not None:
        return _column_name(table, evaluation.group_by)
    if expected is None:
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    column = table.column(expected)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    distinct = pc.count_distinct(column).as_py()
    return expected if 0 < distinct <= AUTO_GROUP_MAX_VALUES else None


def _response_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=False, ensure_ascii=False, default=str)
