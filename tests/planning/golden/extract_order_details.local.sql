-- create the target if missing [ensure_target.sql]
CREATE TABLE IF NOT EXISTS `main`.`support`.`billing_details` AS
SELECT
  `ticket_id` AS `ticket_id`,
  `customer` AS `customer`,
  CAST(NULL AS STRUCT<`issue`: STRING, `amount`: DOUBLE, `seats`: BIGINT, `refund_requested`: BOOLEAN>) AS `response`,
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
FROM (SELECT ticket_id, customer, subject, body FROM `main`.`support`.`tickets` WHERE label = 'billing') AS source_query
WHERE 1 = 0;

-- select the rows to send [inputs.sql]
WITH
src AS (
  SELECT *
  FROM (SELECT ticket_id, customer, subject, body FROM `main`.`support`.`tickets` WHERE label = 'billing') AS source_query
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `ticket_id` IS NOT NULL
),
req AS (  SELECT
    `ticket_id` AS `ticket_id`,
    `customer` AS `customer`,
    CAST(concat('Extract the billing details of this ticket as JSON.

', subject, '
', body) AS STRING) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, coalesce(sha2(concat('437c1dd465dc13776e0db785ab39759156ad245ce8db23b75a659fb441450f2c', `_request`), 256), 'null-request:437c1dd465dc13776e0db785ab39759156ad245ce8db23b75a659fb441450f2c') AS `request_fingerprint`
  FROM req
),
done AS (
  SELECT prior.*
  FROM `main`.`support`.`billing_details` AS prior
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
  `customer`,
  `_request`,
  `request_fingerprint`
FROM todo;

-- overwrite the answers into the target [write_results.sql]
CREATE OR REPLACE TABLE `main`.`support`.`billing_details` AS
WITH
src AS (
  SELECT *
  FROM (SELECT ticket_id, customer, subject, body FROM `main`.`support`.`tickets` WHERE label = 'billing') AS source_query
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `ticket_id` IS NOT NULL
),
req AS (  SELECT
    `ticket_id` AS `ticket_id`,
    `customer` AS `customer`,
    CAST(concat('Extract the billing details of this ticket as JSON.

', subject, '
', body) AS STRING) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, coalesce(sha2(concat('437c1dd465dc13776e0db785ab39759156ad245ce8db23b75a659fb441450f2c', `_request`), 256), 'null-request:437c1dd465dc13776e0db785ab39759156ad245ce8db23b75a659fb441450f2c') AS `request_fingerprint`
  FROM req
),
done AS (
  SELECT prior.*
  FROM `main`.`support`.`billing_details` AS prior
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
  `_ranked`.`ticket_id`,
  `_ranked`.`customer`,
  `_ranked`.`response`,
  `_ranked`.`error`,
  `_ranked`.`http_status`,
  `_ranked`.`attempts`,
  `_ranked`.`latency_ms`,
  `_ranked`.`input_tokens`,
  `_ranked`.`output_tokens`,
  `_ranked`.`trace_id`,
  `_ranked`.`custom_outputs`,
  `_ranked`.`request_fingerprint`,
  `_ranked`.`answered_at`
FROM (
  SELECT
    `_candidates`.*,
    row_number() OVER (
      PARTITION BY `_candidates`.`ticket_id`
      ORDER BY `_candidates`.`_rank`, `_candidates`.`answered_at` DESC
    ) AS `_pick`
  FROM (
    SELECT
      staged.`ticket_id`,
      staged.`customer`,
      staged.`response`,
      staged.`error`,
      staged.`http_status`,
      staged.`attempts`,
      staged.`latency_ms`,
      staged.`input_tokens`,
      staged.`output_tokens`,
      staged.`trace_id`,
      staged.`custom_outputs`,
      staged.`request_fingerprint`,
      staged.`answered_at`,
      0 AS `_rank`
    FROM agentbatch_staged AS staged
    UNION ALL
    SELECT
      fingerprinted.`ticket_id`,
      fingerprinted.`customer`,
      prior.`response`,
      prior.`error`,
      prior.`http_status`,
      prior.`attempts`,
      prior.`latency_ms`,
      prior.`input_tokens`,
      prior.`output_tokens`,
      prior.`trace_id`,
      prior.`custom_outputs`,
      prior.`request_fingerprint`,
      prior.`answered_at`,
      CASE WHEN prior.`request_fingerprint` = fingerprinted.`request_fingerprint` THEN 1 ELSE 2 END AS `_rank`
    FROM `main`.`support`.`billing_details` AS prior
    JOIN fingerprinted ON prior.`ticket_id` = fingerprinted.`ticket_id`
  ) AS `_candidates`
) AS `_ranked`
WHERE `_ranked`.`_pick` = 1;
