{#- The REST fallback's staged answers, as its write reads them. A full refresh (`keep_answers`)
    leaves out a row whose new call failed transiently while the target holds a good answer to the
    same request: that answer stays. The run left such rows out when it read the target before
    its write (runner `_answers_kept`, which counts them); read again here, in the write's own
    statement, because another run's write may land in between (a killed run's statement goes on
    in the warehouse without its client) with the answer a failure must not replace. -#}
{% if keep_answers -%}
(
  SELECT *
  FROM {{ staged }} AS `_staged`
  WHERE NOT (
    coalesce(`_staged`.`error` LIKE {{ transient_error_pattern }}, false)
    AND EXISTS (
      SELECT 1
      FROM {{ output }} AS `_answered_before`
      WHERE `_answered_before`.{{ key }} = `_staged`.{{ key }}
        AND `_answered_before`.`request_fingerprint` = `_staged`.`request_fingerprint`
        AND `_answered_before`.`error` IS NULL
    )
  )
)
{%- else -%}
{{ staged }}
{%- endif %}
