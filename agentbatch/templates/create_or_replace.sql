{#- Push-down, mode overwrite: the target becomes exactly the selected rows: the answers to the
    rows to do, and the rows it already holds for the others (`_held_rows.sql`). -#}
CREATE OR REPLACE TABLE {{ output }} AS
{% include "_answers.sql" %}
{% if keep_held %}
UNION ALL
{% with written = ident("todo") %}{% include "_held_rows.sql" %}{% endwith %}
{% endif %}
