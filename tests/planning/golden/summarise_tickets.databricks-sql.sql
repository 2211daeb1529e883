-- create the target if missing [ensure_target.sql]
CREATE TABLE IF NOT EXISTS `main`.`support`.`ticket_summaries` AS
SELECT
  `ticket_id` AS `ticket_id`,
  `subject` AS `subject`,
  `created_at` AS `created_at`,
  CAST(NULL AS STRING) AS `response`,
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
FROM `main`.`support`.`tickets`
WHERE 1 = 0;

-- call ai_query and merge into the target [merge.sql]
MERGE INTO `main`.`support`.`ticket_summaries` AS target
USING (
  SELECT *
  FROM (
WITH
src AS (
  SELECT *
  FROM `main`.`support`.`tickets`
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `ticket_id` IS NOT NULL
),
req AS (  SELECT
    `ticket_id` AS `ticket_id`,
    `subject` AS `subject`,
    `created_at` AS `created_at`,
    CAST(concat('Summarise this support ticket in one sentence.

Subject: ', subject, '

', body) AS STRING) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, coalesce(sha2(concat('a9a340e2815aa4dabc246612ee21d8793a72ced1b722ff4fe9ae2611310e653e', `_request`), 256), 'null-request:a9a340e2815aa4dabc246612ee21d8793a72ced1b722ff4fe9ae2611310e653e') AS `request_fingerprint`
  FROM req
),
done AS (
  SELECT prior.*
  FROM `main`.`support`.`ticket_summaries` AS prior
  JOIN fingerprinted
    ON prior.`ticket_id` = fingerprinted.`ticket_id`
   AND prior.`request_fingerprint` = fingerprinted.`request_fingerprint`
  WHERE prior.`error` IS NULL OR NOT (prior.`error` LIKE '[transient]%')
),
todo AS (
  SELECT *
  FROM fingerprinted
  WHERE NOT EXISTS (
    SELECT 1
    FROM done
    WHERE done.`ticket_id` = fingerprinted.`ticket_id`
  )
)
,called AS (
  SELECT *, CASE WHEN `_request` IS NOT NULL THEN ai_query('databricks-meta-llama-3-3-70b-instruct', `_request`, failOnError => false, modelParameters => NAMED_STRUCT('max_tokens', 128, 'temperature', 0.0)) END AS `_answer`
  FROM todo
),
answered AS (
  SELECT *,
    CASE WHEN `_request` IS NULL THEN 'request is NULL'
      ELSE nullif(`_answer`.errorMessage, '') END AS `_failure`,
    try_cast(`_answer`.result AS STRING) AS `_text`
  FROM called
)
SELECT
  `ticket_id`,
  `subject`,
  `created_at`,
  CASE WHEN `_failure` IS NULL THEN `_text` END AS `response`,
  concat(CASE WHEN CASE WHEN regexp_extract(`_failure`, '(?i)(?:^|[^a-z])(?:code|status)(?: was| is)?:? ?([1-5][0-9][0-9])(?:[^0-9]|$)', 1) <> '' THEN regexp_extract(`_failure`, '(?i)(?:^|[^a-z])(?:code|status)(?: was| is)?:? ?([1-5][0-9][0-9])(?:[^0-9]|$)', 1) RLIKE '^(?:408|429|5[0-9][0-9])$' ELSE `_failure` RLIKE '(?i)(?:^|[^a-z])(?:timed?[ -]?outs?|rate[ _-]?limit(?:s|ed|ing)?|too many requests)(?:[^a-z]|$)' END THEN '[transient] ' ELSE '[permanent] ' END, `_failure`) AS `error`,
  CAST(NULL AS INT) AS `http_status`,
  CAST(NULL AS INT) AS `attempts`,
  CAST(NULL AS DOUBLE) AS `latency_ms`,
  CAST(NULL AS BIGINT) AS `input_tokens`,
  CAST(NULL AS BIGINT) AS `output_tokens`,
  CAST(NULL AS STRING) AS `trace_id`,
  CAST(NULL AS STRING) AS `custom_outputs`,
  `request_fingerprint`,
  current_timestamp() AS `answered_at`
FROM answered
  ) AS `_answered`
  WHERE CASE WHEN EXISTS (
  SELECT 1
  FROM `main`.`support`.`ticket_summaries`
  GROUP BY `ticket_id`
  HAVING count(*) > 1
) THEN raise_error(concat(
  'main.support.ticket_summaries', ' holds a key in more than one row (by ', '\'ticket_id\'',
  ', the job\'s source.key: written by mode append, another run\'s append landing during this run, or with another source.key); mode merge keeps one row per key, so nothing was written: run once with mode overwrite (it reuses every answer the table holds) or keep mode append'))
ELSE true END
) AS answers
ON target.`ticket_id` = answers.`ticket_id`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *;
