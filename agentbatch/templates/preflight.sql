{#- Before any call: how many rows are selected, how many of them the target already holds, and
    how many source keys occur more than once (an error: one key, one answer). -#}
WITH
{% include "_source.sql" %},
repeated AS (
  SELECT {{ key }}
  FROM fingerprinted
  GROUP BY {{ key }}
  HAVING count(*) > 1
)
SELECT
  (SELECT count(*) FROM fingerprinted) AS `selected`,
{% if incremental %}
  (SELECT count(*) FROM done) AS `done`,
{% else %}
  0 AS `done`,
{% endif %}
  (SELECT count(*) FROM repeated) AS `repeated_keys`
