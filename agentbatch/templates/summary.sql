{#- Rows, answers and errors in the target, for the run summary. -#}
SELECT
  count(*) AS `rows`,
  count_if(`error` IS NULL) AS `ok`,
  count_if(`error` IS NOT NULL) AS `errors`,
  count_if(`answered_at` >= CAST({{ run_started_at }} AS TIMESTAMP)) AS `answered_this_run`,
  count_if(`answered_at` >= CAST({{ run_started_at }} AS TIMESTAMP) AND `error` IS NOT NULL)
    AS `errors_this_run`
FROM {{ output }}
