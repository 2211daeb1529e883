{#- Push-down: the checks `agentbatch run` makes before any call (execution/selection.py), for SQL
    run without agentbatch (a Databricks SQL file task, written by `agentbatch compile`). Each
    fails its statement with `raise_error` and the run's message, so the statements after it (the
    ai_query call, the write) never run; it returns 'ok' when the check passes. `guard`:
    - "source": a source key that occurs more than once in the selection (one key, one answer:
      a MERGE inserts every copy of a key the target lacks, and the next one fails after
      paying). Reads the source only: it runs before the target is created.
    - "target": it runs once the target exists: a source key of another type than the
      target's (keys of two types compare after an implicit cast: '01' = 1), judged by kind
      as the run does (integer widths are one kind), an empty target by its declared type; and
      for mode merge, a target holding a key in several rows (written by mode append); for
      mode append, a key in several rows for one request (written with another source.key). -#}
WITH
{% include "_source.sql" %},
{% if guard == "source" %}
repeated AS (
  SELECT CAST({{ key }} AS STRING) AS `_repeated_key`, count(*) AS `_copies`
  FROM {% include "_repeated_rows.sql" %}
  GROUP BY {{ key }}
  HAVING count(*) > 1
),
shown AS (
  SELECT
    concat({{ "'" }}, `_repeated_key`, {{ "' x" }}, CAST(`_copies` AS STRING)) AS `_shown`,
    row_number() OVER (ORDER BY `_copies` DESC, `_repeated_key`) AS `_rank`
  FROM repeated
)
SELECT
  CASE WHEN (SELECT count(*) FROM repeated) > 0 THEN raise_error(concat(
    {{ "source key " }}, {{ key_name }}, {{ " is not unique: " }},
    CAST((SELECT count(*) FROM repeated) AS STRING), {{ " value(s) occur more than once (" }},
    concat_ws(', ',
{% for rank in range(1, 6) %}
      (SELECT `_shown` FROM shown WHERE `_rank` = {{ rank }}),
{% endfor %}
      CASE WHEN (SELECT count(*) FROM repeated) > 5 THEN '...' END),
    {{ "); one key gets one answer, so nothing was sent: remove the duplicates, narrow `source.where`, or choose a key that is unique" }}))
  ELSE 'ok' END AS `repeated_source_keys`
{% else %}
key_types AS (
  {# An aggregate has a row, with its column's type, when the target has none. #}
  SELECT
    (SELECT typeof({{ key }}) FROM src LIMIT 1) AS `_source_type`,
    (SELECT typeof(max({{ key }})) FROM {{ output }}) AS `_target_type`
),
kinds AS (
  {# Kinds as the run compares them (`_key_kind`): typeof() names as Databricks and DuckDB
      give them; integer widths (and whole-number decimals) are one kind, text kinds another. #}
  SELECT
    *,
{% for side in ("source", "target") %}
{% with type = ident("_" ~ side ~ "_type") %}
    CASE
      WHEN lower({{ type }}) IN ('tinyint', 'smallint', 'int', 'integer', 'bigint', 'hugeint', 'utinyint', 'usmallint', 'uinteger', 'ubigint', 'uhugeint', 'byte', 'short', 'long', 'int1', 'int2', 'int4', 'int8')
        OR lower({{ type }}) LIKE 'decimal(%,0)' OR lower({{ type }}) LIKE 'numeric(%,0)' THEN 'integer'
      WHEN lower({{ type }}) IN ('string', 'varchar', 'char', 'text')
        OR lower({{ type }}) LIKE 'varchar(%' OR lower({{ type }}) LIKE 'char(%' THEN 'string'
      ELSE lower({{ type }})
    END AS {{ ident("_" ~ side ~ "_kind") }}{% if not loop.last %},{% endif +%}
{% endwith %}
{% endfor %}
  FROM key_types
){% if mode == "merge" %},
several AS (
  SELECT {{ key }}
  FROM {{ output }}
  GROUP BY {{ key }}
  HAVING count(*) > 1
){% elif mode == "append" %},
several AS (
  SELECT {{ key }}
  FROM {{ output }}
  GROUP BY {{ key }}, `request_fingerprint`
  HAVING count(*) > 1
){% endif %}

SELECT
  CASE
    WHEN `_source_kind` <> `_target_kind` THEN raise_error(concat(
      {{ "source key " }}, {{ key_name }}, {{ " is " }}, `_source_type`, {{ ", but " }}, {{ output_name }},
      {{ " holds it as " }}, `_target_type`,
      {{ ": keys of different types can compare equal when they are not the same key (the text '01' and the number 1), so nothing was sent; give the source key the target's type (a CAST in `source.query`), write to a new output table, " }},
{% if mode == "overwrite" %}
      {{ "or drop this one (the next run writes it anew, paying for every row; `agentbatch run` replaces it, keeping none of its rows)" }}))
{% else %}
      {{ "or replace this one (mode overwrite, which keeps none of its rows then)" }}))
{% endif %}
{% if mode == "merge" %}
    WHEN (SELECT count(*) FROM several) > 0 THEN raise_error(concat(
      {{ output_name }}, {{ " holds " }}, CAST((SELECT count(*) FROM several) AS STRING),
      {{ " key(s) in more than one row (by " }}, {{ key_name }},
      {{ ", the job's source.key: written by mode append, or with another source.key); mode merge keeps one row per key, so nothing was sent: run once with mode overwrite (it reuses every answer the table holds) or keep mode append" }}))
{% elif mode == "append" %}
    WHEN (SELECT count(*) FROM several) > 0 THEN raise_error(concat(
      {{ output_name }}, {{ " holds " }}, CAST((SELECT count(*) FROM several) AS STRING),
      {{ " key(s) in more than one row for the same request (by " }}, {{ key_name }},
      {{ ", the job's source.key: written with another source.key); mode append keeps one row per key and request, so nothing was sent: run once with mode overwrite (it keeps one row per key and reuses every answer the table holds), or write to a new output table" }}))
{% endif %}
    ELSE 'ok'
  END AS `target_keys`
FROM kinds
{% endif %}
