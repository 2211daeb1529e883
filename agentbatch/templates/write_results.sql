{#- REST fallback: write this run's answers (staged, standard output columns) into the target.
    merge: one row per key (a target holding a key in several rows fails the write:
    `_one_row_per_key.sql`); append: one row per key and request fingerprint; overwrite: the target
    becomes exactly the selected rows (this run's answers, and the rows it already held for
    the others). A full refresh's transient failure does not replace a good answer the target
    holds to the same request when the write runs (`_staged_rows.sql`). -#}
{% if mode == "overwrite" %}
CREATE OR REPLACE TABLE {{ output }} AS
{% if keep_held %}
WITH
{% include "_source.sql" %}
{% with with_staged = true, staged_rows = true %}{% include "_held_rows.sql" %}{% endwith %}
{% else %}
SELECT
  staged.{{ key }},
{% for column in columns %}
  staged.{{ column }},
{% endfor %}
{% for column in result_columns %}
  staged.{{ column }}{% if not loop.last %},{% endif +%}
{% endfor %}
FROM {% include "_staged_rows.sql" %} AS staged
{% endif %}
{% elif mode == "append" %}
MERGE INTO {{ output }} AS target
USING {% include "_staged_rows.sql" %} AS staged
ON target.{{ key }} = staged.{{ key }}
  AND target.`request_fingerprint` = staged.`request_fingerprint`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
{% else %}
MERGE INTO {{ output }} AS target
{% if dialect == "duckdb" %}
USING {% include "_staged_rows.sql" %} AS staged
{% else %}
USING (
  SELECT *
  FROM {% include "_staged_rows.sql" %} AS `_rows`
  WHERE {% include "_one_row_per_key.sql" %}
) AS staged
{% endif %}
ON target.{{ key }} = staged.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
{% endif %}
