{#- Push-down, mode overwrite: the target becomes exactly the selected rows. Rows it already holds
    with the current fingerprint are kept as they are (not paid again, unless a full refresh). -#}
CREATE OR REPLACE TABLE {{ output }} AS
{% include "_answers.sql" %}
{% if incremental %}
UNION ALL
{% include "_kept.sql" %}
{% endif %}
