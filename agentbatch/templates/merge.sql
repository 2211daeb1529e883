{#- Push-down, mode merge: call ai_query only for keys not yet answered, then merge by key. -#}
MERGE INTO {{ output }} AS target
USING (
{% include "_answers.sql" %}
) AS answers
ON target.{{ key }} = answers.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
