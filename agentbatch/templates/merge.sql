{#- Push-down, mode merge: call ai_query for the rows the target does not hold yet, then merge by
    key (one row per key; a target holding a key in several rows fails the write:
    `_one_row_per_key.sql`). -#}
MERGE INTO {{ output }} AS target
USING (
  SELECT *
  FROM (
{% include "_answers.sql" %}
  ) AS `_answered`
  WHERE {% include "_one_row_per_key.sql" %}
) AS answers
ON target.{{ key }} = answers.{{ key }}
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *
