-- select the rows to send [inputs.sql]
WITH
src AS (
  SELECT *
  FROM (SELECT ticket_id, customer, subject, body FROM `main`.`support`.`tickets` WHERE label = 'billing') AS source_query
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `ticket_id` IS NOT NULL
),
req AS (
  SELECT
    `ticket_id`,
    `customer`,
    concat('Extract the billing details of this ticket as JSON.

', subject, '
', body) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, sha2(concat('437c1dd465dc13776e0db785ab39759156ad245ce8db23b75a659fb441450f2c', `_request`), 256) AS `request_fingerprint`
  FROM req
),
todo AS (
  SELECT *
  FROM fingerprinted
)
SELECT
  `ticket_id`,
  `customer`,
  `_request`,
  `request_fingerprint`
FROM todo;

-- overwrite the answers into the target [write_results.sql]
CREATE OR REPLACE TABLE `main`.`support`.`billing_details` AS
SELECT * FROM agentbatch_staged;
