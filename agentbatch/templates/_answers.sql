{#- ai_query over the rows still to do, shaped as the standard output columns. -#}
WITH
{% include "_source.sql" %},
called AS (
  SELECT *, {{ ai_query }} AS `_answer`
  FROM todo
)
SELECT
  {{ key }},
{% for column in columns %}
  {{ column }},
{% endfor %}
{% if response_format %}
  from_json(`_answer`.result, {{ response_format }}) AS `response`,
{% else %}
  CAST(`_answer`.result AS STRING) AS `response`,
{% endif %}
  `_answer`.errorMessage AS `error`,
  CAST(NULL AS INT) AS `http_status`,
  CAST(NULL AS INT) AS `attempts`,
  CAST(NULL AS DOUBLE) AS `latency_ms`,
  CAST(NULL AS BIGINT) AS `input_tokens`,
  CAST(NULL AS BIGINT) AS `output_tokens`,
  CAST(NULL AS STRING) AS `trace_id`,
  CAST(NULL AS STRING) AS `custom_outputs`,
  `request_fingerprint`,
  current_timestamp() AS `answered_at`
FROM called
