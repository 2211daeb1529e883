{#- Push-down, mode overwrite: rebuild the target from every source row. -#}
CREATE OR REPLACE TABLE {{ output }} AS
{% include "_answers.sql" %}
