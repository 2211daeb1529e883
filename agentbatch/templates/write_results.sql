{#- REST fallback: write the staged answers (standard output columns) into the target. -#}
{% if mode == "overwrite" %}
CREATE OR REPLACE TABLE {{ output }} AS
SELECT * FROM {{ staged }}
{% elif mode == "append" %}
INSERT INTO {{ output }}
SELECT * FROM {{ staged }} AS staged
WHERE NOT EXISTS (
  SELECT 1
  FROM {{ output }} AS target
  WHERE target.{{ key }} = staged.{{ key }}
    AND target.`request_fingerprint` = staged.`request_fingerprint`
)
{% else %}
MERGE INTO {{ output }} AS target
USING {{ staged }} AS staged
ON target.{{ key }} = staged.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
{% endif %}
