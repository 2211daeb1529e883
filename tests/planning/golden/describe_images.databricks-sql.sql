-- create the target if missing [ensure_target.sql]
CREATE TABLE IF NOT EXISTS `main`.`shop`.`photo_descriptions` AS
SELECT
  `path` AS `path`,
  `length` AS `length`,
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
FROM (SELECT * FROM read_files('/Volumes/main/shop/photos', format => 'binaryFile')) AS source_query
WHERE 1 = 0;

-- select the rows to send [inputs.sql]
WITH
src AS (
  SELECT *
  FROM (SELECT * FROM read_files('/Volumes/main/shop/photos', format => 'binaryFile')) AS source_query
  -- A row without a key can be neither merged nor resumed: it is never sent.
  WHERE `path` IS NOT NULL
),
req AS (  SELECT
    `path` AS `path`,
    `length` AS `length`,
    content AS `_file`,
    path AS `_file_name`,
    CAST('Give the pixel size and the main colour of this image.' AS STRING) AS `_request`
  FROM src
),
fingerprinted AS (
  SELECT *, coalesce(sha2(concat('42c758d988066187a16c92a91bfa94ff38b96e0340a08aa1dfe3cf579cf8e72a', `_request`, coalesce(sha2(`_file`, 256), ''), coalesce(`_file_name`, ''),
    CASE WHEN octet_length(`_file`) > 2900000 THEN 'over files.max_bytes 2900000' ELSE '' END), 256),
    'null-request:42c758d988066187a16c92a91bfa94ff38b96e0340a08aa1dfe3cf579cf8e72a') AS `request_fingerprint`
  FROM req
),
done AS (
  SELECT prior.*
  FROM `main`.`shop`.`photo_descriptions` AS prior
  JOIN fingerprinted
    ON prior.`path` = fingerprinted.`path`
   AND prior.`request_fingerprint` = fingerprinted.`request_fingerprint`
  WHERE prior.`error` IS NULL OR NOT (prior.`error` LIKE '[transient]%')
),
todo AS (
  SELECT *
  FROM fingerprinted
  WHERE NOT EXISTS (
    SELECT 1
    FROM done
    WHERE done.`path` = fingerprinted.`path`
  )
)
SELECT
  `path`,
  `length`,
  `_request`,
  `_file`,
  `_file_name`,
  `request_fingerprint`
FROM todo;

-- merge the answers into the target [write_results.sql]
MERGE INTO `main`.`shop`.`photo_descriptions` AS target
USING (
  SELECT *
  FROM `main`.`shop`.`photo_descriptions__agentbatch_staged_run` AS `_rows`
  WHERE CASE WHEN EXISTS (
  SELECT 1
  FROM `main`.`shop`.`photo_descriptions`
  GROUP BY `path`
  HAVING count(*) > 1
) THEN raise_error(concat(
  'main.shop.photo_descriptions', ' holds a key in more than one row (by ', '\'path\'',
  ', the job\'s source.key: written by mode append, another run\'s append landing during this run, or with another source.key); mode merge keeps one row per key, so nothing was written: run once with mode overwrite (it reuses every answer the table holds) or keep mode append'))
ELSE true END
) AS staged
ON target.`path` = staged.`path`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *;
