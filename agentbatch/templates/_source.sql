{#- The source rows, their request and fingerprint. Included by every statement template. -#}
src AS (
  SELECT *
  FROM {{ source }}
{% if where %}
  WHERE ({{ where }})
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
    {{ request_value }} AS `_request_value`,
    {{ request_text }} AS `_request`,
    sha2(concat({{ call_fingerprint }}, {{ request_text }}), 256) AS `request_fingerprint`
  FROM src
),
todo AS (
  SELECT *
  FROM req
{% if incremental %}
  WHERE NOT EXISTS (
    SELECT 1
    FROM {{ output }} AS done
    WHERE done.{{ key }} = req.{{ key }}
      AND done.`request_fingerprint` = req.`request_fingerprint`
{% if retry_errors %}
      AND done.`error` IS NULL
{% endif %}
  )
{% endif %}
{% if run_limit %}
  LIMIT {{ run_limit }}
{% endif %}
)
