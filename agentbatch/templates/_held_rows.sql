{#- Mode overwrite: one row per selected key, with the current source columns: this run's answer
    (`with_staged`: the relation `staged`, read once: the REST fallback's staged answers, or the
    push-down's answers of a full refresh, `create_or_replace.sql`), else the row the target
    holds for the key with the current fingerprint, else the one it answered last. So a run
    stopped early, or limited, leaves the keys it did not reach as they were (a later run answers
    them); keys that left the selection are dropped; a key held in several rows (written by mode
    append) keeps one. `written`: a relation of keys answered elsewhere in the statement, whose
    held rows are left out. -#}
SELECT
  `_ranked`.{{ key }},
{% for column in columns %}
  `_ranked`.{{ column }},
{% endfor %}
{% for column in result_columns %}
  `_ranked`.{{ column }}{% if not loop.last %},{% endif +%}
{% endfor %}
FROM (
  SELECT
    `_candidates`.*,
    row_number() OVER (
      PARTITION BY `_candidates`.{{ key }}
      ORDER BY `_candidates`.`_rank`, `_candidates`.`answered_at` DESC
    ) AS `_pick`
  FROM (
{% if with_staged is defined %}
    SELECT
      staged.{{ key }},
{% for column in columns %}
      staged.{{ column }},
{% endfor %}
{% for column in result_columns %}
      staged.{{ column }},
{% endfor %}
      0 AS `_rank`
    FROM {% if staged_rows is defined %}{% include "_staged_rows.sql" %}{% else %}{{ staged }}{% endif %} AS staged
    UNION ALL
{% endif %}
    SELECT
      fingerprinted.{{ key }},
{% for column in columns %}
      fingerprinted.{{ column }},
{% endfor %}
{% for column in result_columns %}
      prior.{{ column }},
{% endfor %}
      CASE WHEN prior.`request_fingerprint` = fingerprinted.`request_fingerprint` THEN 1 ELSE 2 END AS `_rank`
    FROM {{ output }} AS prior
    JOIN fingerprinted ON prior.{{ key }} = fingerprinted.{{ key }}
{% if written is defined %}
    WHERE NOT EXISTS (
      SELECT 1
      FROM {{ written }} AS `_written`
      WHERE `_written`.{{ key }} = prior.{{ key }}
    )
{% endif %}
  ) AS `_candidates`
) AS `_ranked`
WHERE `_ranked`.`_pick` = 1
