"""Evaluation reports: the report model, its Markdown/HTML/SVG renderings, files and MLflow logging."""
