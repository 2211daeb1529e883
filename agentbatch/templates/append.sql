{#- Push-down, mode append: one row per key and request fingerprint. Answers to an edited request
    are added beside the old ones; a retried failure replaces its own row. -#}
MERGE INTO {{ output }} AS target
USING (
{% include "_answers.sql" %}
) AS answers
ON target.{{ key }} = answers.{{ key }}
  AND target.`request_fingerprint` = answers.`request_fingerprint`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
