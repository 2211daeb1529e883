{#- The source rows, their request and fingerprint. Included by every statement template. -#}
src AS (
  SELECT *
  FROM {{ source }}
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE {{ key }} IS NOT NULL
{% if where %}
    AND ({{ where }})
{% endif %}
{% if limit %}
  LIMIT {{ limit }}
{% endif %}
),
req AS (
  SELECT
    {{ key }},
{% for column in columns %}
    {{ column }},
{% endfor %}
{% if request_value != request_text %}
    {{ request_value }} AS `_request_value`,
{% endif %}
    {{ request_text }} AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, sha2(concat({{ call_fingerprint }}, `_request`), 256) AS `request_fingerprint`
  FROM req
),
todo AS (
  SELECT *
  FROM fingerprinted
{% if incremental %}
  WHERE NOT EXISTS (
    SELECT 1
    FROM {{ output }} AS done
    WHERE done.{{ key }} = fingerprinted.{{ key }}
      AND done.`request_fingerprint` = fingerprinted.`request_fingerprint`
{% if retry_errors %}
      AND done.`error` IS NULL
{% endif %}
  )
{% endif %}
{% if run_limit %}
  LIMIT {{ run_limit }}
{% endif %}
)
