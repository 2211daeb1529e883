{#- No rows, with the standard output columns and the job's types. -#}
SELECT
  {{ key }} AS {{ key }},
{% for column in columns %}
  {{ column }} AS {{ column }},
{% endfor %}
  CAST(NULL AS {{ response_type }}) AS `response`,
  CAST(NULL AS STRING) AS `error`,
  CAST(NULL AS INT) AS `http_status`,
  CAST(NULL AS INT) AS `attempts`,
  CAST(NULL AS DOUBLE) AS `latency_ms`,
  CAST(NULL AS BIGINT) AS `input_tokens`,
  CAST(NULL AS BIGINT) AS `output_tokens`,
  CAST(NULL AS STRING) AS `trace_id`,
  CAST(NULL AS STRING) AS `custom_outputs`,
  CAST(NULL AS STRING) AS `request_fingerprint`,
  CAST(NULL AS TIMESTAMP) AS `answered_at`
FROM {{ source }}
WHERE 1 = 0
