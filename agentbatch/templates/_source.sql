{#- The source rows, their request and fingerprint (with files: over a hash of the bytes, so a
    changed file is sent again), and which of them the target already holds.
    Included by every statement template. -#}
src AS (
  SELECT *
  FROM {{ source }}
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE {{ key }} IS NOT NULL
{% if where %}
    AND ({{ where }})
{% endif %}
{% if limit %}
  {#- Ordered: each statement selects again, and an unordered LIMIT may pick other rows. -#}
  ORDER BY {{ key }}
  LIMIT {{ limit }}
{% endif %}
),
req AS (
  {#- Named as the job spells them: the source may spell them in another case (the engines
      match names without case, and would return the source's spelling). #}
  SELECT
    {{ key }} AS {{ key }},
{% for column in columns %}
    {{ column }} AS {{ column }},
{% endfor %}
{% if request_value != request_text %}
    {{ request_value }} AS `_request_value`,
{% endif %}
{% if files %}
    {{ files.content }} AS `_file`,
    {{ files.name }} AS `_file_name`,
{% endif %}
    {{ request_text }} AS `_request`
  FROM src
),
{# A file over files.max_bytes is never sent: its fingerprint carries the limit, so a raised limit
   sends it (and only it) the next run, and a file under the limit keeps its answer.
   A NULL request is never sent either (it is a row error): its fingerprint is the call's with a
   prefix no sha2 digest has, so the target holds it as done like any other row (a NULL
   fingerprint would match nothing: the row would be redone, and appended again, every run). #}
fingerprinted AS (
{% if files %}
  SELECT *, coalesce(sha2(concat({{ call_fingerprint }}, `_request`, coalesce(sha2(`_file`, 256), ''), coalesce(`_file_name`, ''),
    CASE WHEN octet_length(`_file`) > {{ files.max_bytes }} THEN {{ files.over_limit }} ELSE '' END), 256),
    {{ null_request_fingerprint }}) AS `request_fingerprint`
{% else %}
  SELECT *, coalesce(sha2(concat({{ call_fingerprint }}, `_request`), 256), {{ null_request_fingerprint }}) AS `request_fingerprint`
{% endif %}
  FROM req
),
{% if incremental or refresh_since %}
{#- The target decides what is done: a row for the key with the current fingerprint, answered or
    failed for good. A transient failure is sent again; any failure with retry_errors. A full
    refresh that continues an unfinished one (`refresh_since`, when it began) counts only the
    rows answered since then: those it already paid for. -#}
done AS (
  SELECT prior.*
  FROM {{ output }} AS prior
  JOIN fingerprinted
    ON prior.{{ key }} = fingerprinted.{{ key }}
   AND prior.`request_fingerprint` = fingerprinted.`request_fingerprint`
{% if retry_errors %}
  WHERE prior.`error` IS NULL
{% elif refresh_since %}
  WHERE (prior.`error` IS NULL OR NOT (prior.`error` LIKE {{ transient_error_pattern }}))
{% else %}
  WHERE prior.`error` IS NULL OR NOT (prior.`error` LIKE {{ transient_error_pattern }})
{% endif %}
{% if refresh_since %}
    AND prior.`answered_at` >= CAST({{ refresh_since }} AS TIMESTAMP)
{% endif %}
),
{% endif %}
{% if oldest_first %}
{#- A full refresh with a run limit takes the rows whose answers are oldest (those the target holds
    no answer to the current request for first), so that runs of it refresh the table in turns,
    not the same first rows each time. -#}
last_answered AS (
  SELECT {{ key }}, `request_fingerprint`, max(`answered_at`) AS `_last_answered`
  FROM {{ output }}
  GROUP BY {{ key }}, `request_fingerprint`
),
{% endif %}
todo AS (
{% if oldest_first %}
  SELECT fingerprinted.*
  FROM fingerprinted
  LEFT JOIN last_answered
    ON last_answered.{{ key }} = fingerprinted.{{ key }}
   AND last_answered.`request_fingerprint` = fingerprinted.`request_fingerprint`
{% if refresh_since %}
  WHERE NOT EXISTS (
    SELECT 1
    FROM done
    WHERE done.{{ key }} = fingerprinted.{{ key }}
  )
{% endif %}
  ORDER BY last_answered.`_last_answered` NULLS FIRST, fingerprinted.{{ key }}
  LIMIT {{ run_limit }}
{% else %}
  SELECT *
  FROM fingerprinted
{% if incremental and files and dialect == "duckdb" %}
  {#- On DuckDB (the local engine), rows with file bytes go through a filter, not a join: DuckDB
      buffers every row a hash join's probe side emits, so a join would hold every file at once.
      Elsewhere the anti-join below: it streams, and never gathers the done keys into one value. -#}
  WHERE NOT coalesce(array_contains((SELECT collect_list(done.{{ key }}) FROM done), fingerprinted.{{ key }}), false)
{% elif incremental or refresh_since %}
  WHERE NOT EXISTS (
    SELECT 1
    FROM done
    WHERE done.{{ key }} = fingerprinted.{{ key }}
  )
{% endif %}
{% if run_limit %}
  ORDER BY {{ key }}
  LIMIT {{ run_limit }}
{% endif %}
{% endif %}
)
