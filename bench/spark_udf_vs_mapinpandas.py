"""Agent calls from Spark: mapInPandas running the async bulk client vs a row-at-a-time UDF.

Both answer the same rows against the same loopback demo agent (fixed latency per request), in one
local Spark session with the same number of tasks. The row UDF makes one blocking HTTP call per
row; mapInPandas answers each partition with agentbatch's async client (adaptive concurrency up to
the cap, split across tasks). For reference it also times the `ai_query` the spark engine registers
off Databricks (an Arrow UDF answering each batch with the same client). Prints rows/s of each and
the ratio; writes nothing.

    python -m bench.spark_udf_vs_mapinpandas [--rows 2000] [--latency-ms 50] [--tasks 2] [--cap 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from agentbatch.agent.calls import CallSpec
from agentbatch.engines.spark.ai_query import AiQueryConfig, register_ai_query
from agentbatch.engines.spark.calls import RemoteCall, answer_batches
from agentbatch.testing.agent_server import serve_agent
from agentbatch.testing.faults import FaultConfig


def session(tasks: int) -> SparkSession:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    spark = (
        SparkSession.builder.master(f"local[{tasks}]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def rows(spark: SparkSession, count: int, tasks: int) -> DataFrame:
    return (
        spark.range(count)
        .select(
            F.col("id"),
            F.concat(F.lit("Summarise ticket "), F.col("id").cast("string")).alias("_request"),
            F.lit(None).cast("string").alias("request_fingerprint"),
        )
        .repartition(tasks)
    )


def row_udf(url: str) -> object:
    @F.udf("string")
    def ask(text):  # type: ignore[no-untyped-def]  # hints would make PySpark guess an Arrow UDF
        body = json.dumps({"input": [{"role": "user", "content": text}]}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            return str(json.load(reply)["output"][0]["content"][0]["text"])

    return ask


def map_in_pandas(remote: RemoteCall) -> object:
    def answer(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        done: list[pa.Table] = []
        batches = (pa.RecordBatch.from_pandas(f, preserve_index=False) for f in frames)
        answer_batches(batches, remote, "id", done.append)
        for table in done:
            yield table.select(["id", "response", "error"]).to_pandas()

    return answer


def timed(action: DataFrame) -> float:
    started = time.perf_counter()
    action.write.format("noop").mode("overwrite").save()  # runs every call, keeps nothing
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--cap", type=int, default=64, help="concurrent calls across all tasks")
    args = parser.parse_args()
    spark = session(args.tasks)
    with serve_agent(FaultConfig(latency_ms=args.latency_ms)) as agent:
        url = f"{agent.url}/responses"
        call = CallSpec(endpoint="bench", max_concurrency=args.cap)
        remote = RemoteCall(call, {"bench": agent.url}, {}).per_task(args.tasks)
        data = rows(spark, args.rows, args.tasks).cache()
        data.count()
        timed(
            data.select(row_udf(url)(F.lit("warm up")).alias("r")).limit(args.tasks)
        )  # workers up
        schema = "id long, response string, error string"
        async_s = timed(data.mapInPandas(map_in_pandas(remote), schema))
        udf_s = timed(data.select("id", row_udf(url)(F.col("_request")).alias("response")))
        served = agent.stats().requests_total
        config = AiQueryConfig(
            overrides={"bench": agent.url},
            text_api="responses",
            max_concurrency=max(1, args.cap // args.tasks),
        )
        register_ai_query(spark, config)
        ai_query = F.expr("ai_query('bench', _request, failOnError => false)")
        ai_query_s = timed(data.select("id", ai_query.alias("answer")))
    async_rate, udf_rate = args.rows / async_s, args.rows / udf_s
    ai_query_rate = args.rows / ai_query_s
    print(f"rows={args.rows} latency_ms={args.latency_ms:g} tasks={args.tasks} cap={args.cap}")
    print(f"mapInPandas + async bulk client: {async_s:7.2f} s  {async_rate:8.1f} rows/s")
    print(f"row-at-a-time UDF, blocking HTTP: {udf_s:7.2f} s  {udf_rate:8.1f} rows/s")
    print(f"ratio: {async_rate / udf_rate:.1f}x  (agent served {served} requests)")
    print(f"registered ai_query (Arrow UDF):  {ai_query_s:7.2f} s  {ai_query_rate:8.1f} rows/s")
    spark.stop()


if __name__ == "__main__":
    main()
