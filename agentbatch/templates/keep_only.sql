{#- Mode overwrite, when a run has no new answers to write: the target becomes the rows it already
    holds for this selection (rows that left the source, or the selection, are dropped), or
    none when they cannot be kept (they hold answers of another shape). -#}
CREATE OR REPLACE TABLE {{ output }} AS
{% if keep_held %}
WITH
{% include "_source.sql" %}
{% include "_held_rows.sql" %}
{% else %}
{% include "_empty_rows.sql" %}
{% endif %}
