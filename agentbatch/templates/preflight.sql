{#- Before any call: how many rows are selected, how many the filter keeps that have no key (never
    sent: the user is told), how many of them the target already holds, how
    many source keys occur more than once (an error: one key, one answer), the types of the
    source's and the target's key when the run matches them, and for mode merge how many keys
    the target holds more than once (written by mode append: merge keeps one per key), for mode
    append how many it holds more than once for one request (written with another source.key:
    append keeps one per key and request). `done` counts source rows: a target row each, but a
    table written with another key may hold a key's answer twice. -#}
WITH
{% include "_source.sql" %},
repeated AS (
  SELECT {{ key }}
  FROM {% include "_repeated_rows.sql" %}
  GROUP BY {{ key }}
  HAVING count(*) > 1
)
SELECT
  `counted`.`selected`,
  `counted`.`requested`,
  (SELECT count(*) FROM {{ source }} WHERE {{ key }} IS NULL{% if where %} AND ({{ where }}){% endif %}) AS `null_keys`,
{% if incremental or refresh_since %}
  (SELECT count(DISTINCT {{ key }}) FROM done) AS `done`,
  (SELECT count(DISTINCT CASE WHEN `error` IS NOT NULL THEN {{ key }} END) FROM done) AS `done_errors`,
{% else %}
  0 AS `done`,
  0 AS `done_errors`,
{% endif %}
  (SELECT count(*) FROM repeated) AS `repeated_keys`,
{% if incremental or mode != "overwrite" %}
  {#- The run matches source keys with the target's: their types must agree (typeof names the
      column's type, also for a NULL value). -#}
  (SELECT typeof({{ key }}) FROM src LIMIT 1) AS `source_key_type`,
  (SELECT typeof({{ key }}) FROM {{ output }} LIMIT 1) AS `target_key_type`,
{% endif %}
{% if mode == "merge" %}
  (SELECT count(*) FROM (
     SELECT {{ key }} FROM {{ output }} GROUP BY {{ key }} HAVING count(*) > 1
   ) AS several) AS `target_repeated_keys`
{% elif mode == "append" %}
  (SELECT count(*) FROM (
     SELECT {{ key }} FROM {{ output }} GROUP BY {{ key }}, `request_fingerprint` HAVING count(*) > 1
   ) AS several) AS `target_repeated_keys`
{% else %}
  0 AS `target_repeated_keys`
{% endif %}
{#- Every selected request is computed here (`requested`, read out: an optimizer prunes an unused
    column, and counts a never-NULL value, the fingerprint, as `count(*)`, which would also skip a
    file's bytes it hashes): a source value the job's SQL cannot convert fails the run before any
    call, not once the rows before it were sent. -#}
FROM (
  SELECT count(*) AS `selected`, count(`_request`) AS `requested`
  FROM fingerprinted
) AS `counted`
