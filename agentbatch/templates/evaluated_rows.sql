{#- Evaluation: the rows an evaluation scores. For each key of the selection (the source with its
    `where` and `limit`), the row the target holds for it with the current request fingerprint,
    with the current source columns (a corrected expected label counts; the copy the target took
    when the row was answered does not). A key the target holds no answer to the current request
    for is left out. `latest_otherwise`: every key the target holds any answer for, with the row
    answered last (what an evaluation counts as answered to another request only; never scored). -#}
WITH
{% include "_source.sql" %}
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
    fingerprinted.{{ key }},
{% for column in columns %}
    fingerprinted.{{ column }},
{% endfor %}
{% for column in result_columns %}
    prior.{{ column }},
{% endfor %}
    row_number() OVER (
      PARTITION BY fingerprinted.{{ key }}
      ORDER BY CASE WHEN prior.`request_fingerprint` = fingerprinted.`request_fingerprint` THEN 1 ELSE 2 END,
        prior.`answered_at` DESC
    ) AS `_pick`
  FROM {{ output }} AS prior
  JOIN fingerprinted
    ON prior.{{ key }} = fingerprinted.{{ key }}
{% if not latest_otherwise %}
   AND prior.`request_fingerprint` = fingerprinted.`request_fingerprint`
{% endif %}
) AS `_ranked`
WHERE `_ranked`.`_pick` = 1
