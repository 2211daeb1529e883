{#- REST fallback: write this run's answers (staged, standard output columns) into the target.
    merge: one row per key; append: one row per key and request fingerprint; overwrite: the target
    becomes exactly the selected rows (this run's answers plus the rows it already held). -#}
{% if mode == "overwrite" %}
CREATE OR REPLACE TABLE {{ output }} AS
{% if incremental %}
WITH
{% include "_source.sql" %}
{% endif %}
SELECT
  staged.{{ key }},
{% for column in columns %}
  staged.{{ column }},
{% endfor %}
{% for column in result_columns %}
  staged.{{ column }}{% if not loop.last %},{% endif +%}
{% endfor %}
FROM {{ staged }} AS staged
{% if incremental %}
UNION ALL
{% include "_kept.sql" %}
{% endif %}
{% elif mode == "append" %}
MERGE INTO {{ output }} AS target
USING {{ staged }} AS staged
ON target.{{ key }} = staged.{{ key }}
  AND target.`request_fingerprint` = staged.`request_fingerprint`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
{% else %}
MERGE INTO {{ output }} AS target
USING {{ staged }} AS staged
ON target.{{ key }} = staged.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
{% endif %}
