"""Save the conformance models (from code) into a directory: `python save_models.py OUT_DIR`.

Run in a subprocess so MLflow's global state never touches the test process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow

HERE = Path(__file__).parent


def main() -> None:
    out = Path(sys.argv[1])
    for name in ("responses_model", "chat_model"):
        mlflow.pyfunc.save_model(path=str(out / name), python_model=str(HERE / f"{name}.py"))


if __name__ == "__main__":
    main()
