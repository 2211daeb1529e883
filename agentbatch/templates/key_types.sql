{#- The types of the source's key and of the target's (an existing target), read before mode
    overwrite keeps any of the target's rows: keys of two types can compare equal when they are
    not the same key. -#}
WITH
{% include "_source.sql" %}
SELECT
  (SELECT typeof({{ key }}) FROM src LIMIT 1) AS `source_key_type`,
  (SELECT typeof({{ key }}) FROM {{ output }} LIMIT 1) AS `target_key_type`
