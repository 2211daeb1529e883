{#- ai_query over the rows still to do, shaped as the standard output columns.
    An errorMessage of '' counts as none (documented NULL; '' has been seen). With a
    response_format, the answer text goes through the checks of agentbatch.planning.answers: a failed
    check is a row error with the REST fallback's message, never a struct of NULLs. `error` starts
    with its kind, read from the message by the REST fallback's rule
    (agentbatch.planning.failures): a 429, 5xx or timeout is [transient], sent again by the next
    run; anything else is [permanent].
    `keep_answers` (a full refresh through the built-in templates): a row whose new call failed
    transiently, and whose key the target holds a good answer to the same request for, is left
    out: the write leaves that answer as it is (the REST fallback's rule).
    `answers_as`: the rows end as a relation of that name, last of the WITH list (no SELECT
    follows: the including template adds its own). -#}
WITH
{% include "_source.sql" %},
{#- A NULL request is not sent (ai_query's answer to one is not documented), nor is a file over
    files.max_bytes (a row without a file is sent): each is the row error the REST fallback gives
    it. #}
called AS (
{% if files %}
  SELECT *, CASE WHEN `_request` IS NOT NULL AND NOT coalesce({{ files.too_large }}, false)
    THEN {{ ai_query }} END AS `_answer`
{% else %}
  SELECT *, CASE WHEN `_request` IS NOT NULL THEN {{ ai_query }} END AS `_answer`
{% endif %}
  FROM todo
),
answered AS (
  SELECT *,
    CASE WHEN `_request` IS NULL THEN {{ null_request_error }}
{% if files %}
      WHEN {{ files.too_large }} THEN {{ files.too_large_error }}
{% endif %}
      ELSE nullif(`_answer`.errorMessage, '') END AS `_failure`,
    try_cast(`_answer`.result AS STRING) AS `_text`
  FROM called
){% if checks %},
unfenced AS (
  SELECT *, {{ checks.json }} AS `_json`, {{ checks.preview }} AS `_preview`
  FROM answered
),
fields AS (
  SELECT *,
{% for field in checks.fields %}
    {{ field.raw }} AS {{ field.raw_alias }},
{% endfor %}
    {{ checks.keys }} AS `_keys`
  FROM unfenced
),
typed AS (
  SELECT *,
{% for field in checks.fields %}
    {{ field.value }} AS {{ field.value_alias }},
{% endfor %}
    CASE WHEN `_failure` IS NULL THEN {{ checks.problem }} END AS `_problem`
  FROM fields
){% endif %}{% if answers_as is defined %},
{{ answers_as }} AS ({% endif %}

SELECT
  {{ key }},
{% for column in columns %}
  {{ column }},
{% endfor %}
{% if checks %}
  CASE WHEN `_failure` IS NULL AND `_problem` IS NULL AND `_text` IS NOT NULL THEN {{ checks.response }} END AS `response`,
  {{ error }} AS `error`,
{% else %}
  CASE WHEN `_failure` IS NULL THEN `_text` END AS `response`,
  {{ error }} AS `error`,
{% endif %}
  CAST(NULL AS INT) AS `http_status`,
  CAST(NULL AS INT) AS `attempts`,
  CAST(NULL AS DOUBLE) AS `latency_ms`,
  CAST(NULL AS BIGINT) AS `input_tokens`,
  CAST(NULL AS BIGINT) AS `output_tokens`,
  CAST(NULL AS STRING) AS `trace_id`,
  CAST(NULL AS STRING) AS `custom_outputs`,
  `request_fingerprint`,
  current_timestamp() AS `answered_at`
{% set rows = "typed" if checks else "answered" %}
{% if checks %}
FROM typed
{% else %}
FROM answered
{% endif %}
{% if keep_answers %}
WHERE NOT (
  coalesce({{ error }} LIKE {{ transient_error_pattern }}, false)
  AND EXISTS (
    SELECT 1
    FROM {{ output }} AS `_answered_before`
    WHERE `_answered_before`.{{ key }} = {{ ident(rows) }}.{{ key }}
      AND `_answered_before`.`request_fingerprint` = {{ ident(rows) }}.`request_fingerprint`
      AND `_answered_before`.`error` IS NULL
  )
)
{% endif %}
{% if answers_as is defined %}
)
{% endif %}
