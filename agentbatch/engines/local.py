"""The `local` engine: the job's rendered Databricks SQL, transpiled by sqlglot, run by DuckDB.

Tables map to local data:
- a table given in `tables` reads a CSV / Parquet / JSON file (or a pandas DataFrame) in place; a
  mapped table the job *writes* is kept in memory during the run and saved back to its file (a
  folder path means a Delta table, written with the `deltalake` package; `mapped_outputs` does
  this). A table a later run reads back (a job's output) must be Parquet or Delta, which keep its
  column types; CSV and JSON, which DuckDB reads back with re-guessed types, can only receive a
  table written whole (scores);
- any other table lives in the project's local warehouse folder: one DuckDB file per catalog, so a
  later run finds the earlier output (incremental merge, resume).

DuckDB's buffer pool is capped (`memory_limit` setting, default 256MB) and spills to
`<warehouse_dir>/.spill` (a private temporary folder while there is no warehouse folder), so
memory stays flat in the number of rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import sqlglot
from sqlglot import exp

from agentbatch.engines import mapped_outputs, output_lock, writable
from agentbatch.engines.base import WriteRequest, WriteStats, ctrl_c_kept, error_line
from agentbatch.engines.binary_files import LISTING_PREFIX, rewrite_for_duckdb, volume_mappings
from agentbatch.engines.mapped_outputs import (
    FILE_READERS,
    MAPPED_CATALOG,
    delta_dataset,
    delta_files_relation,
    duck_literal,
)
from agentbatch.engines.merge_rules import (
    DUPLICATE_MATCH_MESSAGE,
    CheckedMerge,
    checked_duckdb_merge,
)
from agentbatch.errors import (
    ConfigError,
    EngineError,
    MissingDependencyError,
    SourceValueError,
    UsageError,
)
from agentbatch.sql import parsing
from agentbatch.sql.quoting import identifier as quote_identifier
from agentbatch.sql.quoting import table_parts

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

log = logging.getLogger(__name__)

TableSource = Any  # a path (str / Path) or a pandas DataFrame / Arrow table
# A quoted empty CSV field ("") is an empty string, as Spark's CSV reader has it; only an
# empty field is NULL (DuckDB reads both as NULL by default). Column types are guessed from
# every row (`sample_size = -1`), as Spark's `inferSchema` reads all the input (`samplingRatio`
# 1.0): from the first 20,480 rows only (DuckDB's default), a later value of another kind (`n/a`
# in a column of numbers) failed the run partway, after rows were sent, run after run.
_READER_OPTIONS = {
    "read_csv_auto": ", allow_quoted_nulls = false, sample_size = -1",
    "read_json_auto": ", sample_size = -1",
}
DEFAULT_MEMORY_LIMIT = "256MB"
_WAREHOUSE_PREFIX = "wh_"


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise MissingDependencyError("duckdb", "local") from None
    return duckdb


TRY_CAST_HINT = "where a value may not convert, try_cast(value AS type) gives NULL instead"


def _engine_error(err: Exception) -> EngineError:
    """duckdb's error as the engine's: one line; a value that does not convert, with its remedy.
    (Found while streaming batches, duckdb's error reaches us through pyarrow as an OSError that
    keeps only its text.)"""
    conversion = isinstance(err, _duckdb().ConversionException) or (
        isinstance(err, OSError) and str(err).startswith("Conversion Error:")
    )
    # Not a CSV file's value that the type its first rows gave does not take.
    if conversion and "CSV Error" not in str(err):
        return SourceValueError(f"local engine: {error_line(err)} ({TRY_CAST_HINT})")
    return EngineError(f"local engine: {error_line(err)}")


def _reported(reader: Any) -> Iterator[pa.RecordBatch]:
    """The batches of `reader`; an error found while reading one (a later row's value), as the
    engine reports it."""
    batches = iter(reader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (_duckdb().Error, OSError) as err:
            raise _engine_error(err) from None
        yield batch


class LocalEngine:
    name: ClassVar[str] = "local"
    dialect: ClassVar[str] = "duckdb"
    native_ai_query: ClassVar[bool] = False
    distributed_calls: ClassVar[bool] = False

    @classmethod
    def staging_relation(cls, table: str, run_id: str) -> str:
        return "agentbatch_staged"

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        tables: Mapping[str, TableSource] | None = None,
        warehouse_dir: str | Path | None = None,
        output_tables: Iterable[str] = (),
    ) -> None:
        settings = dict(settings or {})
        self.default_catalog = str(settings.get("catalog", "main"))
        self.default_schema = str(settings.get("schema", "default"))
        self.warehouse_dir = Path(
            warehouse_dir or settings.get("warehouse_dir") or ".agentbatch/warehouse"
        )
        self._con: duckdb.DuckDBPyConnection = _duckdb().connect()
        self._sql("SET TimeZone = 'UTC'")
        # DuckDB's default cap is 80% of RAM, which makes memory grow with the table written.
        memory_limit = str(settings.get("memory_limit", DEFAULT_MEMORY_LIMIT))
        self._sql(f"SET memory_limit = {duck_literal(memory_limit)}")
        private_spill = _private_spill_dir(self.warehouse_dir)
        # Removed at close, or when an engine never closed is collected or the process exits.
        self._remove_spill = weakref.finalize(self, _remove_folder, private_spill)
        spill = private_spill or self.warehouse_dir / ".spill"
        self._sql(f"SET temp_directory = {duck_literal(spill)}")
        self._sql(f"ATTACH ':memory:' AS {MAPPED_CATALOG}")
        self._attached: set[str] = set()
        self._settled = False  # the run is over: reads only, each attaching and detaching
        self._relations: dict[tuple[str, str, str], str] = {}
        self._outputs: dict[tuple[str, str, str], TableSource] = {}
        # Mapped outputs this run may replace whole but not read, and why (the error to raise).
        self._unreadable: dict[tuple[str, str, str], str] = {}
        self._locks: list[output_lock.OutputLock] = []
        self._delta_output = False  # an output mapped to a Delta folder: `check_passthrough`
        # Inputs read from a file with no rows (a CSV with its header only): their column types
        # are guesses. Tables this engine created, and whether each mapped output's path existed.
        self._guessed: list[str] = []
        self._created: set[tuple[str, str, str]] = set()
        self._existed: dict[tuple[str, str, str], bool] = {}
        # `--table /Volumes/...=FOLDER` maps a volume path read by read_files(..., 'binaryFile').
        self._volumes = volume_mappings(tables or {})
        try:
            self._map_tables(tables or {}, output_tables, _holder(settings))
        except BaseException:
            self.close()  # releases the locks taken so far
            raise

    # -- the Engine protocol --------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        statement, written = self._prepare(sql, writing=True)
        # A mapped output that exists is not changed by CREATE TABLE IF NOT EXISTS: not saved
        # again (a Delta output would gain a version, a whole copy of the table, every run).
        unchanged = {
            table
            for table in written
            if table in self._outputs
            and _creates_if_missing(sql)
            and self._has_table(MAPPED_CATALOG, table[1], table[2])
        }
        creating = [t for t in written if _creates(sql) and not self._exists(t)]
        checked = _checked_merge(statement) if not params else None
        if checked is None:
            self._run(statement, params)
        else:
            self._run_checked_merge(checked)
        self._created.update(creating)
        for table in written:
            if table in self._outputs and table not in unchanged:
                self._unreadable.pop(table, None)  # replaced: it holds this run's table now
                mapped_outputs.save(self._con, table, Path(self._outputs[table]))

    def fetch_batches(
        self, sql: str, params: Mapping[str, Any] | None = None, *, batch_rows: int = 10_000
    ) -> Iterator[pa.RecordBatch]:
        statement, _ = self._prepare(sql, writing=False)
        try:
            with ctrl_c_kept():
                relation = self._con.sql(statement, params=dict(params or {}))
                reader = relation.to_arrow_reader(batch_rows)
        except Exception as err:  # duckdb raises many unrelated classes; report them as one
            raise _engine_error(err) from None
        try:
            yield from _reported(reader)
        finally:
            # Closed early (a stopped run), the result would keep the connection busy.
            reader.close()
            if self._settled:  # a read of a run's result: let the warehouse file go again
                self._detach_warehouses()

    def fetch_one(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        statement, _ = self._prepare(sql, writing=False)
        try:
            with ctrl_c_kept():
                relation = self._con.sql(statement, params=dict(params or {}))
                names = list(relation.columns)
                rows = relation.fetchall()
        except Exception as err:
            raise _engine_error(err) from None
        finally:
            if self._settled:
                self._detach_warehouses()
        return dict(zip(names, rows[0] if rows else (None,) * len(names), strict=True))

    def table_exists(self, table: str) -> bool:
        full = self._full_name(table)
        if full in self._relations:
            return True
        try:
            return self._exists(full)
        finally:
            if self._settled:
                self._detach_warehouses()

    def check_passthrough(self, inputs_sql: str, columns: Sequence[str]) -> None:
        """Refuse, before any call is paid, a column of the REST fallback's inputs (`columns`: the
        key first) that this run could not write back as it is: `unwritable_column`."""
        if not columns:
            return
        inputs = f"({inputs_sql}) AS `inputs`"
        typed = ", ".join(
            f"typeof(`rows`.{quote_identifier(name)}) AS `c{number}`"
            for number, name in enumerate(columns)
        )
        types = self.fetch_one(
            f"SELECT {typed} FROM (SELECT 1 AS `one`) AS `one` "
            f"LEFT JOIN (SELECT * FROM {inputs} LIMIT 0) AS `rows` ON true"
        )
        wide = [
            name
            for number, name in enumerate(columns)
            if str(types.get(f"c{number}")) in ("HUGEINT", "UHUGEINT")
        ]
        beyond: dict[str, int] = {}
        if wide:
            counts = ", ".join(
                f"count_if({quote_identifier(name)} IS NOT NULL AND "
                f"try_cast({quote_identifier(name)} AS DECIMAL(38, 0)) IS NULL) AS `c{number}`"
                for number, name in enumerate(wide)
            )
            found = self.fetch_one(f"SELECT {counts} FROM {inputs}")
            beyond = {name: int(found[f"c{number}"] or 0) for number, name in enumerate(wide)}
        problems = [
            problem
            for number, name in enumerate(columns)
            if (
                problem := unwritable_column(
                    name,
                    str(types.get(f"c{number}") or ""),
                    key=number == 0,
                    delta=self._delta_output,
                    beyond_38_digits=beyond.get(name, 0),
                )
            )
        ]
        if problems:
            raise UsageError("; ".join(problems) + ". Nothing was sent to the agent")

    def write_results(
        self, request: WriteRequest, batches: Iterable[pa.RecordBatch], schema: pa.Schema
    ) -> WriteStats:
        import pyarrow as pa

        counted = _Counter(batches)
        reader = pa.RecordBatchReader.from_batches(schema, iter(counted))
        self._con.register(request.staging_name, reader)
        try:
            for sql in request.write_sql:
                self.execute(sql)
        finally:
            self._con.unregister(request.staging_name)
        return WriteStats(rows_written=counted.rows)

    def ai_query_missing(self) -> str | None:
        """No ai_query here: the planner never pushes down to this engine."""
        return None

    def check_can_write(self, table: str) -> None:
        """Mapped outputs are tried for writing when the engine opens (`mapped_outputs`)."""

    def read_table(self, table: str, limit: int | None = None) -> pa.Table:
        name = ".".join(f"`{p}`" for p in self._full_name(table))
        suffix = f" LIMIT {int(limit)}" if limit is not None else ""
        try:
            statement, _ = self._prepare(f"SELECT * FROM {name}{suffix}", writing=False)
            try:
                with ctrl_c_kept():
                    return self._con.sql(statement).to_arrow_table()
            except Exception as err:
                raise EngineError(f"local engine: {error_line(err)}") from None
        finally:
            if self._settled:
                self._detach_warehouses()

    def settle(self) -> None:
        """The run is over; this engine only reads its output from now on (a run's result). The
        local warehouse files are let go between reads: DuckDB refuses a file two connections of
        one process attach, so a result kept open (a notebook's `result = run(...)`) stopped
        every later run and read of the same catalog. An output not kept is dropped here, so
        that what reads the result (the run summary, `to_pandas`) finds it gone."""
        self._settled = True
        try:
            self._drop_guessed_outputs()
        finally:
            self._detach_warehouses()

    def _drop_guessed_outputs(self) -> None:
        """Not kept: a table this engine created that holds no rows while an input's types were
        guesses (a CSV with its header only reads every column as text). Kept, it fixed its key's
        type as text, and the first run with rows (numbers) was refused, or stored them as text;
        the first run with rows creates it with their types."""
        if not self._guessed:
            return
        for full in sorted(self._created):
            catalog, schema, name = self._physical(full, attach=False)
            relation = f'"{catalog}"."{schema}"."{name}"'
            if catalog is None or not self._has_table(catalog, schema, name):
                continue
            if self._sql(f"SELECT 1 FROM {relation} LIMIT 1"):
                continue
            self._sql(f"DROP TABLE {relation}")
            if full in self._outputs:
                existed = self._existed.get(full, False)
                mapped_outputs.remove(full, Path(self._outputs[full]), existed=existed)
            log.warning(
                "%s was not kept: it holds no rows, and its source (%s) has none yet to give "
                "its columns their types; the first run with rows creates it",
                ".".join(full),
                ", ".join(self._guessed),
            )
        self._created.clear()  # decided once: at the end of the run, or on close

    def _exists(self, full: tuple[str, str, str]) -> bool:
        catalog, schema, name = self._physical(full, attach=False)
        return catalog is not None and self._has_table(catalog, schema, name)

    def _detach_warehouses(self) -> None:
        for catalog in sorted(self._attached):
            self._sql(f"DETACH {catalog}")
        self._attached.clear()

    def close(self) -> None:
        try:
            self._drop_guessed_outputs()
        finally:
            try:
                self._con.close()
            finally:
                self._remove_spill()
                # After the connection: the warehouse file is complete before the next run
                # may open it. Released even when the close failed: the process lives on.
                for lock in self._locks:
                    lock.release()
                self._locks.clear()

    def location(self, table: str) -> dict[str, str]:
        """Where a table physically is: its mapped file, or the warehouse file and a query reading it.

        DuckDB reserves the catalog name `main` (a file `main.duckdb` opened on its own is catalog
        `main_db`), so the query uses the two-part name `schema.table`, which resolves in the file
        whatever DuckDB calls its catalog."""
        full = self._full_name(table)
        if full in self._outputs or full in self._relations:
            source = self._outputs.get(full)
            return {"table": ".".join(full), "file": str(source) if source is not None else ""}
        path = self.warehouse_dir / f"{full[0]}.duckdb"
        return {
            "table": ".".join(full),
            "duckdb_file": str(path),
            "duckdb_query": f'SELECT * FROM "{full[1]}"."{full[2]}"',
        }

    # -- table mapping ----------------------------------------------------------------------------

    def _full_name(self, name: str) -> tuple[str, str, str]:
        parts = table_parts(name)
        padded = (self.default_catalog, self.default_schema)[: 3 - len(parts)] + parts
        return (padded[0].lower(), padded[1].lower(), padded[2].lower())

    def _map_tables(
        self, tables: Mapping[str, TableSource], output_tables: Iterable[str], holder: str
    ) -> None:
        outputs = {self._full_name(t) for t in output_tables}
        for number, (name, source) in enumerate(tables.items()):
            if name.rstrip("/") in self._volumes:
                continue
            full = self._full_name(name)
            if full in outputs:
                if isinstance(source, (str, os.PathLike)) and Path(source).is_symlink():
                    # Written where the link points: a file is saved by replacing it, which
                    # would replace the link, and the file it points at would keep old rows.
                    source = Path(os.path.realpath(source))
                self._outputs[full] = source
                if isinstance(source, (str, os.PathLike)):
                    self._existed[full] = Path(source).exists()
            else:
                view = self._register_input(f"agentbatch_input_{number}", name, source)
                self._relations[full] = self._with_portable_types(view)
        # A mapping refused leaves no file behind, so it is refused before anything is locked.
        kinds = {
            full: mapped_outputs.output_kind(".".join(full), source)
            for full, source in self._outputs.items()
        }
        self._delta_output = "delta" in kinds.values()
        # Every output is locked before any is read: a table read before the lock could be saved
        # over by the run holding it, and this run would then save over that run's rows.
        self._lock_outputs(outputs, holder)
        for full, kind in kinds.items():
            unreadable = mapped_outputs.load(self._con, full, Path(self._outputs[full]), kind)
            if unreadable is not None:
                self._unreadable[full] = unreadable

    def _lock_outputs(self, outputs: Iterable[tuple[str, str, str]], holder: str) -> None:
        places = set()
        for full in outputs:
            source = self._outputs.get(full)
            if source is None:  # one warehouse file per catalog, one writer per file
                places.add(self.warehouse_dir / f"{full[0]}.duckdb")
            else:
                places.add(Path(source))
        mapped = {Path(source): full for full, source in self._outputs.items()}
        for place in sorted(places):
            if place in mapped:
                self._locks.append(mapped_outputs.lock(mapped[place], place, holder))
            else:
                self._locks.append(output_lock.hold(place.resolve(), holder))
                try:  # DuckDB makes its write-ahead log beside the file: at a write, paid for
                    writable.try_writing(place.parent, place.name)
                except OSError as err:
                    raise ConfigError(
                        f"local engine: cannot write in the local warehouse folder "
                        f"{place.parent}: {err.strerror}; give this user write access to it "
                        "(the local target keeps its tables there)"
                    ) from None

    def _conflicts_as_text(self, view: str) -> str:
        """`view` of a JSON file, with each column whose values are of more than one kind (`5`
        and `"B-7"`) as text, as Spark's JSON reader infers such a column: `B-7` and `5`. DuckDB
        gives it its JSON type, whose text kept a string's quotes (a key `"B-7"`)."""
        return self._replacing(view, "text", lambda t: t == "JSON", "({} ->> '$')")

    def _with_portable_types(self, view: str) -> str:
        """`view`, with columns of DuckDB-only types read as text: no type at all (a source with
        no rows: pandas' empty object column, Parquet's null), and ENUM (a pandas Categorical).
        An output made from them had a column a later value could not be written to (another
        category, any value at all), and each later run paid for its rows, then failed."""
        return self._replacing(
            view, "typed", lambda t: t == '"NULL"' or t.startswith("ENUM("), "CAST({} AS VARCHAR)"
        )

    def _replacing(
        self, view: str, suffix: str, chosen: Callable[[str], bool], expression: str
    ) -> str:
        """`view`, or a view over it with each column whose DuckDB type is `chosen` replaced by
        `expression` of it (`{}` stands for the column); the same view when none is."""
        columns = [
            exp.to_identifier(name, quoted=True).sql("duckdb")
            for name, type_name, *_ in self._con.execute(f"DESCRIBE {view}").fetchall()
            if chosen(type_name)
        ]
        if not columns:
            return view
        replaced = ", ".join(f"{expression.format(name)} AS {name}" for name in columns)
        self._sql(f"CREATE TEMP VIEW {view}_{suffix} AS SELECT * REPLACE ({replaced}) FROM {view}")
        return f"{view}_{suffix}"

    def _register_input(self, view: str, name: str, source: TableSource) -> str:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            reader = FILE_READERS.get(path.suffix.lower())
            if path.is_dir() and (path / "_delta_log").is_dir():
                try:
                    plain = delta_files_relation(path)
                    if plain is None:
                        self._con.register(view, delta_dataset(path))
                    else:
                        self._sql(f"CREATE TEMP VIEW {view} AS SELECT * FROM {plain}")
                except MissingDependencyError:
                    raise
                except Exception as err:  # a damaged log, a data file gone
                    raise UsageError(
                        f"--table {name}={path}: cannot read the Delta table: {error_line(err)}"
                    ) from None
                return view
            if reader is None:
                raise UsageError(
                    f"--table {name}={path}: unsupported file type; use .csv, .parquet, .json/.jsonl or a Delta folder"
                )
            if not path.exists():
                raise UsageError(f"--table {name}={path}: no such file")
            if path.is_file() and _blank(path):
                raise UsageError(
                    f"--table {name}={path}: the file is empty: no header line, no rows"
                )
            try:
                options = _READER_OPTIONS.get(reader, "")
                self._sql(
                    f"CREATE TEMP VIEW {view} AS SELECT * FROM "
                    f"{reader}({duck_literal(path)}{options})"
                )
                no_rows = reader != "read_parquet" and not self._sql(
                    f"SELECT 1 FROM {view} LIMIT 1"
                )
            except Exception as err:  # DuckDB's reader errors (encoding, malformed rows, ...)
                raise UsageError(
                    f"--table {name}={path}: cannot read it: {error_line(err)}"
                ) from None
            if no_rows:  # its types are guesses
                self._guessed.append(f"{name}={path}")
            return self._conflicts_as_text(view) if reader == "read_json_auto" else view
        try:
            self._con.register(view, source)  # pandas DataFrame or Arrow table, queried in place
            self._con.execute(f"DESCRIBE {view}")  # an object DuckDB cannot scan fails here
        except Exception as err:
            # DuckDB's reason tells about a frame it could not read, not about another object.
            why = f" ({error_line(err).splitlines()[0]})" if _is_frame(source) else ""
            raise UsageError(
                f"tables[{name!r}]: cannot read a {type(source).__name__} as a table{why}; give "
                "a path (CSV, Parquet, JSON, a Delta folder), a pandas DataFrame with columns, "
                "or an Arrow table"
            ) from None
        return view

    def _physical(self, full: tuple[str, str, str], *, attach: bool) -> tuple[str | None, str, str]:
        if full in self._outputs:
            return MAPPED_CATALOG, full[1], full[2]
        catalog = _WAREHOUSE_PREFIX + re.sub(r"\W", "_", full[0])
        if catalog not in self._attached:
            path = self.warehouse_dir / f"{full[0]}.duckdb"
            if not attach and not path.exists():
                return None, full[1], full[2]
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._sql(f"ATTACH {duck_literal(path)} AS {catalog}")
            except Exception as err:
                raise EngineError(_attach_failed(path, err)) from None
            self._attached.add(catalog)
        if attach:
            self._sql(f'CREATE SCHEMA IF NOT EXISTS {catalog}."{full[1]}"')
        return catalog, full[1], full[2]

    def _prepare(self, sql: str, *, writing: bool) -> tuple[str, list[tuple[str, str, str]]]:
        """Transpile to DuckDB, pointing each table at its local relation."""
        try:
            tree = parsing.parse_one(sql)
        except (sqlglot.errors.ParseError, TypeError) as err:  # TypeError: sqlglot compiled
            raise EngineError(f"local engine: cannot parse SQL: {error_line(err)}") from None
        rewrite_for_duckdb(tree, self._volumes, self._con)
        ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        targets = _written_tables(tree)
        written = [self._full_name(_table_name(t)) for t in targets]
        # Replaced or dropped whole: a mapped output this run cannot read may still go.
        whole = isinstance(tree, exp.Drop) or (
            isinstance(tree, exp.Create) and tree.args.get("replace")
        )
        replaced = targets if whole else []
        for node in list(tree.find_all(exp.Table)):
            if not node.name or (not node.db and node.name.lower() in ctes):
                continue
            if not node.db and (
                node.name in ("agentbatch_staged",) or node.name.startswith(LISTING_PREFIX)
            ):
                continue
            full = self._full_name(_table_name(node))
            if full in self._unreadable and not any(node is t for t in replaced):
                raise UsageError(self._unreadable[full])
            if full in self._relations:
                replacement = exp.to_table(self._relations[full])
            else:
                catalog, schema, name = self._physical(full, attach=writing)
                if catalog is None or (
                    full not in written
                    and full not in self._outputs
                    and not self._has_table(catalog, schema, name)
                ):
                    raise EngineError(self._no_table_message(full))
                replacement = exp.Table(
                    this=exp.to_identifier(name, quoted=True),
                    db=exp.to_identifier(schema, quoted=True),
                    catalog=exp.to_identifier(catalog, quoted=True),
                )
            if node.alias:
                replacement.set("alias", node.args.get("alias"))
            node.replace(replacement)
        return tree.sql(dialect=self.dialect), written

    def _no_table_message(self, full: tuple[str, str, str]) -> str:
        """A missing table, in the user's terms: the mappings in use and how to map it."""
        name = ".".join(full)
        mapped = ", ".join(".".join(t) for t in sorted({*self._relations, *self._outputs}))
        return (
            f"local engine: table {name} does not exist: it is not mapped with --table "
            f"(mapped: {mapped or 'none'}) and is not in the local warehouse "
            f"({self.warehouse_dir / (full[0] + '.duckdb')}); map it to a file with "
            f"--table {name}=PATH"
        )

    def _run_checked_merge(self, checked: CheckedMerge) -> None:
        """A MERGE refused as Delta refuses it: several source rows matching one target row."""
        self._run(checked.materialize, None)
        try:
            if self._sql(checked.find_duplicate):
                raise EngineError(f"local engine: {DUPLICATE_MATCH_MESSAGE}")
            target_columns = self._columns(checked.target_columns)
            try:
                merge = checked.merge(target_columns, self._columns(checked.source_columns))
            except ValueError as err:
                raise EngineError(f"local engine: {err}") from None
            replacing = checked.replacing(target_columns)
            if replacing is None or self._sql(checked.find_fanout):
                self._run(merge, None)
            else:
                self._in_one_transaction(replacing)
        finally:
            self._sql(checked.drop)

    def _in_one_transaction(self, statements: Iterable[str]) -> None:
        self._run("BEGIN TRANSACTION", None)
        try:
            for statement in statements:
                self._run(statement, None)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped it is the one to tell
                self._con.execute("ROLLBACK")
            raise
        self._run("COMMIT", None)

    def _columns(self, query: str) -> list[str]:
        return [column[0] for column in self._con.execute(query).description or []]

    def _run(self, statement: str, params: Mapping[str, Any] | None) -> None:
        try:
            self._sql(statement, params)
        except Exception as err:
            raise _engine_error(err) from None

    def _sql(
        self, statement: str, params: Mapping[str, Any] | list[Any] | None = None
    ) -> list[Any]:
        """Run one statement and drain its result (DuckDB refuses new work until then)."""
        with ctrl_c_kept():
            return self._con.execute(statement, params or None).fetchall()

    def _has_table(self, catalog: str, schema: str, name: str) -> bool:
        found = self._sql(
            "SELECT count(*) FROM duckdb_tables() "
            "WHERE database_name = ? AND schema_name = ? AND table_name = ?",
            [catalog, schema, name],
        )
        return bool(found and found[0][0])


class _Counter:
    """Counts the rows of the batches it passes on."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._batches = batches
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            self.rows += batch.num_rows
            yield batch


def _creates(sql: str) -> bool:
    """`sql` is a CREATE [OR REPLACE] TABLE [IF NOT EXISTS]."""
    return _table_creation(sql) is not None


def _creates_if_missing(sql: str) -> bool:
    """`sql` is a CREATE TABLE IF NOT EXISTS (not OR REPLACE)."""
    create = _table_creation(sql)
    return create is not None and bool(create.args.get("exists")) and not create.args.get("replace")


def _table_creation(sql: str) -> exp.Create | None:
    # The tree `_prepare` parsed: `parsing` keeps it by its text, so nothing is parsed again.
    trees = parsing.statements(sql)
    tree = trees[0] if trees else None
    return tree if isinstance(tree, exp.Create) and tree.kind == "TABLE" else None


def _checked_merge(statement: str) -> CheckedMerge | None:
    if statement.lstrip()[:5].upper() != "MERGE":
        return None
    tree = sqlglot.parse_one(statement, read="duckdb")
    return checked_duckdb_merge(tree) if isinstance(tree, exp.Merge) else None


def _table_name(node: exp.Table) -> str:
    return ".".join(f"`{p.name}`" for p in node.parts)


def _written_tables(tree: exp.Expr) -> list[exp.Table]:
    target = None
    if isinstance(tree, exp.Drop):  # its tables: under `tables` (sqlglot 30), or `expressions`
        return [t for t in tree.args.get("tables") or tree.expressions if isinstance(t, exp.Table)]
    if isinstance(tree, (exp.Create, exp.Insert, exp.Merge)):
        target = tree.this
        if isinstance(target, exp.Schema):
            target = target.this
    return [target] if isinstance(target, exp.Table) else []


def _holder(settings: Mapping[str, Any]) -> str:
    """Who this engine writes for, in the words another run's lock error shows."""
    named = (("job", settings.get("job_name")), ("run", settings.get("run_id")))
    return ", ".join(f"{what} {value}" for what, value in named if value) or "agentbatch"


def _is_frame(source: object) -> bool:
    return hasattr(source, "columns") or hasattr(source, "schema")


def _attach_failed(path: Path, err: BaseException) -> str:
    text = error_line(err)
    if "Unique file handle conflict" in text:
        return (
            f"local engine: the local warehouse file {path} is open in another run of this "
            "process, still running or kept open by the Python API; close it (`with "
            "agentbatch.run(...) as result:`, or `result.close()`) or let it finish"
        )
    if "Could not set lock" not in text:
        return f"local engine: cannot open the local warehouse file {path}: {text}"
    pid = re.search(r"\(PID (\d+)\)", text)
    holder = f"process {pid.group(1)}" if pid else "another process"
    return (
        f"local engine: the local warehouse file {path} is in use by {holder} (another run, or "
        "a program that has it open); wait for it to finish"
    )


def _blank(path: Path) -> bool:
    """True for a file with nothing but white space in its first 4 KiB (a zero-byte CSV)."""
    with path.open("rb") as handle:
        return not handle.read(4096).strip()


def _remove_folder(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


# DuckDB's unsigned integers and the signed Databricks type that holds each (Spark reads Parquet's
# unsigned integers so).
_SIGNED_FOR_UNSIGNED = {
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INT",
    "UINTEGER": "BIGINT",
    "UBIGINT": "DECIMAL(20, 0)",
}


def unwritable_column(
    name: str, duck_type: str, *, key: bool, delta: bool, beyond_38_digits: int
) -> str | None:
    """Why a source column of `duck_type` cannot be carried to the output as it is, with the
    fix; None when it can. Each of these was found only at the write, after every call was paid:

    - an integer of 39 digits or more (`beyond_38_digits` rows): Arrow's widest decimal, the
      checkpoint's and every output's form, holds 38, and no Databricks type holds more;
    - into a Delta folder, an unsigned integer: Delta's integers are signed, so 200 in a
      UTINYINT does not fit the TINYINT the table was made with;
    - into a Delta folder, a key in nanoseconds: Delta keeps microseconds, so two keys could
      become one."""
    column = quote_identifier(name)
    if beyond_38_digits:
        return (
            f"column {name!r} holds {beyond_38_digits} integer(s) of 39 digits or more, which no "
            f"output type holds (DECIMAL(38, 0) is the widest): give it as text in "
            f"`source.query` (CAST({column} AS STRING))"
        )
    if delta and duck_type in _SIGNED_FOR_UNSIGNED:
        signed = _SIGNED_FOR_UNSIGNED[duck_type]
        return (
            f"column {name!r} is an unsigned integer ({duck_type}), which a Delta table cannot "
            f"hold (its integers are signed): cast it in `source.query` "
            f"(CAST({column} AS {signed})), or map the output to a Parquet file"
        )
    if delta and key and duck_type.startswith("TIMESTAMP_NS"):
        return (
            f"key {name!r} is a timestamp in nanoseconds, which a Delta table keeps in "
            f"microseconds (two keys could become one): give it as text in `source.query` "
            f"(CAST({column} AS STRING)), or map the output to a Parquet file"
        )
    return None


def _private_spill_dir(warehouse_dir: Path) -> Path | None:
    """Where DuckDB spills when there is no warehouse folder yet (a dry run or a run over mapped
    files only may be the first thing run here, and creates no folder): a private path in the
    temporary folder, which DuckDB makes only when it spills (the last folder of its
    temp_directory), so that a killed run that never spilled leaves nothing behind."""
    if warehouse_dir.is_dir():
        return None
    return Path(tempfile.gettempdir()) / f"agentbatch-spill-{uuid.uuid4().hex}"
