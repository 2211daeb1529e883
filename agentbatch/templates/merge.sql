{#- Push-down, mode merge: call ai_query for the rows the target does not hold yet, then merge by
    key (one row per key). -#}
MERGE INTO {{ output }} AS target
USING (
{% include "_answers.sql" %}
) AS answers
ON target.{{ key }} = answers.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
