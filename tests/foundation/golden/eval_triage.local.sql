-- select the rows to send [inputs.sql]
WITH
src AS (
  SELECT *
  FROM `main`.`support`.`tickets`
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `ticket_id` IS NOT NULL
),
req AS (
  SELECT
    `ticket_id`,
    `subject`,
    `label`,
    concat('Classify this support ticket. Ticket: ', subject, '

', body) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, sha2(concat('2d0f200e0fce8bd47e2e74e7832d1f4763783d71d7d3378085e1d581f1c1b1a0', `_request`), 256) AS `request_fingerprint`
  FROM req
),
todo AS (
  SELECT *
  FROM fingerprinted
)
SELECT
  `ticket_id`,
  `subject`,
  `label`,
  `_request`,
  `request_fingerprint`
FROM todo;

-- overwrite the answers into the target [write_results.sql]
CREATE OR REPLACE TABLE `main`.`support`.`triage_eval` AS
SELECT * FROM agentbatch_staged;
