{#- Push-down, mode merge: call ai_query only for keys not yet answered, then merge by key. -#}
MERGE INTO {{ output }} AS target
USING (
{% filter indent(2, first=True) %}
{% include "_answers.sql" %}
{% endfilter %}
) AS answers
ON target.{{ key }} = answers.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
