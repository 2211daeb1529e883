"""A Spark Connect DataFrame given as a job's table is read as it is, on every supported pyspark.

pyspark 3.5's Connect DataFrame is no subclass of `pyspark.sql.DataFrame` (from 4.0 it is), so a
type check against the classic class alone handed it to `createDataFrame`, which refuses it. The
floor run (pyspark 3.5) is where this test can fail; no Connect server is needed to make the
object, since reading it as a source touches nothing of it."""

from __future__ import annotations

import pandas as pd
from pyspark.sql.connect import dataframe as connect

from agentbatch.engines.spark.tables import is_spark_data_frame, read_source


def test_a_connect_data_frame_is_a_source_as_it_is() -> None:
    frame = object.__new__(connect.DataFrame)

    assert is_spark_data_frame(frame)
    assert read_source(None, "main.shop.reviews", frame) is frame  # type: ignore[arg-type]


def test_other_inputs_are_not_data_frames() -> None:
    assert not is_spark_data_frame(pd.DataFrame({"a": [1]}))
    assert not is_spark_data_frame("reviews.csv")
