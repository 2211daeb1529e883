{#- Push-down, mode overwrite: the target becomes exactly the selected rows: the answers to the
    rows to do, and the rows it already holds for the others (`_held_rows.sql`). A full refresh
    (`keep_answers`) ranks the answers with the rows held: a key whose new call failed transiently
    is left out of the answers (`_answers.sql`) and keeps the answer it holds to the request. -#}
CREATE OR REPLACE TABLE {{ output }} AS
{% if keep_answers %}
{% with answers_as = ident("_answers") %}{% include "_answers.sql" %}{% endwith %}
{% with with_staged = true, staged = ident("_answers") %}{% include "_held_rows.sql" %}{% endwith %}
{% else %}
{% include "_answers.sql" %}
{% if keep_held %}
UNION ALL
{% with written = ident("todo") %}{% include "_held_rows.sql" %}{% endwith %}
{% endif %}
{% endif %}
