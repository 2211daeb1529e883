"""The spark target on a Spark Connect session, as Databricks serverless compute and Databricks
Connect give one: only Spark Connect APIs ("Only Spark Connect APIs are supported. Spark RDD APIs
are not supported", Databricks docs: compute/serverless/limitations), so no SparkContext, RDD,
cache or py4j. The cases (`connect/cases_*.py`) run on a local Spark Connect server (pyspark 4:
`SparkSession.builder.remote("local[2]")`), in a pytest process of their own: pyspark refuses a
local Connect session beside the classic session the rest of the suite shares
(SESSION_ALREADY_EXIST). One Connect session serves all of them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
ROOT = HERE.parents[2]


def test_the_spark_target_on_a_spark_connect_session(tmp_path: Path) -> None:
    import pyspark

    if int(pyspark.__version__.split(".")[0]) < 4:
        pytest.skip("a local Spark Connect server needs pyspark 4 (this is the floor's pyspark)")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    argv = [
        *("-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"),
        *("-o", "python_files=cases_*.py", "--basetemp", str(tmp_path / "cases")),
        str(HERE / "connect"),
    ]
    result = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
