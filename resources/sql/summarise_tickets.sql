-- agentbatch compile: job summarise_tickets, target databricks-sql
-- refuse repeated source keys before anything is created or paid [guards.sql]
WITH
src AS (
  SELECT *
  FROM IDENTIFIER('`' || :catalog || '`.`support`.`tickets`')
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
todo AS (
  SELECT *
  FROM fingerprinted
)
,
repeated AS (
  SELECT CAST(`ticket_id` AS STRING) AS `_repeated_key`, count(*) AS `_copies`
  FROM fingerprinted
  GROUP BY `ticket_id`
  HAVING count(*) > 1
),
shown AS (
  SELECT
    concat('\'', `_repeated_key`, '\' x', CAST(`_copies` AS STRING)) AS `_shown`,
    row_number() OVER (ORDER BY `_copies` DESC, `_repeated_key`) AS `_rank`
  FROM repeated
)
SELECT
  CASE WHEN (SELECT count(*) FROM repeated) > 0 THEN raise_error(concat(
    'source key ', '\'ticket_id\'', ' is not unique: ',
    CAST((SELECT count(*) FROM repeated) AS STRING), ' value(s) occur more than once (',
    concat_ws(', ',
      (SELECT `_shown` FROM shown WHERE `_rank` = 1),
      (SELECT `_shown` FROM shown WHERE `_rank` = 2),
      (SELECT `_shown` FROM shown WHERE `_rank` = 3),
      (SELECT `_shown` FROM shown WHERE `_rank` = 4),
      (SELECT `_shown` FROM shown WHERE `_rank` = 5),
      CASE WHEN (SELECT count(*) FROM repeated) > 5 THEN '...' END),
    '); one key gets one answer, so nothing was sent: remove the duplicates, narrow `source.where`, or choose a key that is unique'))
  ELSE 'ok' END AS `repeated_source_keys`;

-- create the target if missing [ensure_target.sql]
CREATE TABLE IF NOT EXISTS IDENTIFIER('`' || :catalog || '`.`support`.`ticket_summaries`') AS
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
FROM IDENTIFIER('`' || :catalog || '`.`support`.`tickets`')
WHERE 1 = 0;

-- refuse a target the job cannot write by key before anything is paid [guards.sql]
WITH
src AS (
  SELECT *
  FROM IDENTIFIER('`' || :catalog || '`.`support`.`tickets`')
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
todo AS (
  SELECT *
  FROM fingerprinted
)
,
key_types AS (
  SELECT
    (SELECT typeof(`ticket_id`) FROM src LIMIT 1) AS `_source_type`,
    (SELECT typeof(max(`ticket_id`)) FROM IDENTIFIER('`' || :catalog || '`.`support`.`ticket_summaries`')) AS `_target_type`
),
kinds AS (
  SELECT
    *,
    CASE
      WHEN lower(`_source_type`) IN ('tinyint', 'smallint', 'int', 'integer', 'bigint', 'hugeint', 'utinyint', 'usmallint', 'uinteger', 'ubigint', 'uhugeint', 'byte', 'short', 'long', 'int1', 'int2', 'int4', 'int8')
        OR lower(`_source_type`) LIKE 'decimal(%,0)' OR lower(`_source_type`) LIKE 'numeric(%,0)' THEN 'integer'
      WHEN lower(`_source_type`) IN ('string', 'varchar', 'char', 'text')
        OR lower(`_source_type`) LIKE 'varchar(%' OR lower(`_source_type`) LIKE 'char(%' THEN 'string'
      ELSE lower(`_source_type`)
    END AS `_source_kind`,
    CASE
      WHEN lower(`_target_type`) IN ('tinyint', 'smallint', 'int', 'integer', 'bigint', 'hugeint', 'utinyint', 'usmallint', 'uinteger', 'ubigint', 'uhugeint', 'byte', 'short', 'long', 'int1', 'int2', 'int4', 'int8')
        OR lower(`_target_type`) LIKE 'decimal(%,0)' OR lower(`_target_type`) LIKE 'numeric(%,0)' THEN 'integer'
      WHEN lower(`_target_type`) IN ('string', 'varchar', 'char', 'text')
        OR lower(`_target_type`) LIKE 'varchar(%' OR lower(`_target_type`) LIKE 'char(%' THEN 'string'
      ELSE lower(`_target_type`)
    END AS `_target_kind`
  FROM key_types
),
several AS (
  SELECT `ticket_id`
  FROM IDENTIFIER('`' || :catalog || '`.`support`.`ticket_summaries`')
  GROUP BY `ticket_id`
  HAVING count(*) > 1
)
SELECT
  CASE
    WHEN `_source_kind` <> `_target_kind` THEN raise_error(concat(
      'source key ', '\'ticket_id\'', ' is ', `_source_type`, ', but ', (:catalog || '.support.ticket_summaries'),
      ' holds it as ', `_target_type`,
      ': keys of different types can compare equal when they are not the same key (the text \'01\' and the number 1), so nothing was sent; give the source key the target\'s type (a CAST in `source.query`), write to a new output table, ',
      'or replace this one (mode overwrite, which keeps none of its rows then)'))
    WHEN (SELECT count(*) FROM several) > 0 THEN raise_error(concat(
      (:catalog || '.support.ticket_summaries'), ' holds ', CAST((SELECT count(*) FROM several) AS STRING),
      ' key(s) in more than one row (by ', '\'ticket_id\'',
      ', the job\'s source.key: written by mode append, or with another source.key); mode merge keeps one row per key, so nothing was sent: run once with mode overwrite (it reuses every answer the table holds) or keep mode append'))
    ELSE 'ok'
  END AS `target_keys`
FROM kinds;

-- call ai_query and merge into the target [merge.sql]
MERGE INTO IDENTIFIER('`' || :catalog || '`.`support`.`ticket_summaries`') AS target
USING (
  SELECT *
  FROM (
WITH
src AS (
  SELECT *
  FROM IDENTIFIER('`' || :catalog || '`.`support`.`tickets`')
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
  FROM IDENTIFIER('`' || :catalog || '`.`support`.`ticket_summaries`') AS prior
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
  FROM IDENTIFIER('`' || :catalog || '`.`support`.`ticket_summaries`')
  GROUP BY `ticket_id`
  HAVING count(*) > 1
) THEN raise_error(concat(
  (:catalog || '.support.ticket_summaries'), ' holds a key in more than one row (by ', '\'ticket_id\'',
  ', the job\'s source.key: written by mode append, another run\'s append landing during this run, or with another source.key); mode merge keeps one row per key, so nothing was written: run once with mode overwrite (it reuses every answer the table holds) or keep mode append'))
ELSE true END
) AS answers
ON target.`ticket_id` = answers.`ticket_id`
WHEN MATCHED THEN UPDATE SET *
WHEN NOT MATCHED THEN INSERT *;
