{#- Create the target with the standard output columns when it does not exist yet. -#}
CREATE TABLE IF NOT EXISTS {{ output }} AS
{% include "_empty_rows.sql" %}
