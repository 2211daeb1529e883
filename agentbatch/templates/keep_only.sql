{#- Mode overwrite, when a run has no new answers to write: the target becomes the rows it already
    holds for this selection (rows that left the source, or the selection, are dropped). -#}
CREATE OR REPLACE TABLE {{ output }} AS
{% if incremental %}
WITH
{% include "_source.sql" %}
{% include "_kept.sql" %}
{% else %}
SELECT * FROM {{ output }} WHERE 1 = 0
{% endif %}
