{#- Mode merge: a predicate over the rows to write, true while the target holds each key in one
    row, else failing the write with the preflight's refusal (`raise_error`). The run checked the
    target before it chose its rows; another run's write may land since (a killed run's statement
    goes on in the warehouse without its client): after an append, a MERGE by key would update
    each row of a key alike, leaving the key in identical rows. Read in the write's own statement,
    so the write and the check see one version of the target (a commit after it begins fails it
    as a write conflict, and it runs again). Not on DuckDB (the local engine): its writes are one
    process's, under the output's lock, and it has no `raise_error`. -#}
CASE WHEN EXISTS (
  SELECT 1
  FROM {{ output }}
  GROUP BY {{ key }}
  HAVING count(*) > 1
) THEN raise_error(concat(
  {{ output_name }}, {{ " holds a key in more than one row (by " }}, {{ key_name }},
  {{ ", the job's source.key: written by mode append, another run's append landing during this run, or with another source.key); mode merge keeps one row per key, so nothing was written: run once with mode overwrite (it reuses every answer the table holds) or keep mode append" }}))
ELSE true END
