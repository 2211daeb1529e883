-- create the target if missing [ensure_target.sql]
CREATE TABLE IF NOT EXISTS `main`.`support`.`ticket_replies` AS
SELECT
  `ticket_id` AS `ticket_id`,
  `subject` AS `subject`,
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

-- select the rows to send [inputs.sql]
WITH
src AS (
  SELECT *
  FROM `main`.`support`.`tickets`
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `ticket_id` IS NOT NULL
    AND (status = 'open')
),
req AS (  SELECT
    `ticket_id` AS `ticket_id`,
    `subject` AS `subject`,
    named_struct('input', array(named_struct('role', 'user', 'content', CAST(concat('Draft a first reply to this ticket. Ticket: ', subject, '

', body) AS STRING))), 'custom_inputs', NAMED_STRUCT('team', 'support'), 'databricks_options', NAMED_STRUCT('return_trace', TRUE)) AS `_request_value`,
    CAST(concat('Draft a first reply to this ticket. Ticket: ', subject, '

', body) AS STRING) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, coalesce(sha2(concat('a3e2fbc5d9333d40aeec631207c9919886deb263ea44bcec27d94fc01cc5d583', `_request`), 256), 'null-request:a3e2fbc5d9333d40aeec631207c9919886deb263ea44bcec27d94fc01cc5d583') AS `request_fingerprint`
  FROM req
),
done AS (
  SELECT prior.*
  FROM `main`.`support`.`ticket_replies` AS prior
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
SELECT
  `ticket_id`,
  `subject`,
  `_request`,
  `request_fingerprint`
FROM todo;

-- merge the answers into the target [write_results.sql]
MERGE INTO `main`.`support`.`ticket_replies` AS target
USING (
  SELECT *
  FROM `main`.`support`.`ticket_replies__agentbatch_staged_run` AS `_rows`
  WHERE CASE WHEN EXISTS (
  SELECT 1
  FROM `main`.`support`.`ticket_replies`
  GROUP BY `ticket_id`
  HAVING count(*) > 1
) THEN raise_error(concat(
  'main.support.ticket_replies', ' holds a key in more than one row (by ', '\'ticket_id\'',
  ', the job\'s source.key: written by mode append, another run\'s append landing during this run, or with another source.key); mode merge keeps one row per key, so nothing was written: run once with mode overwrite (it reuses every answer the table holds) or keep mode append'))
ELSE true END
) AS staged
ON target.`ticket_id` = staged.`ticket_id`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *;
