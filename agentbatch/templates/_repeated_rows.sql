{#- The rows whose keys are counted for repeats (one key, one answer): the selection's. With
    `source.limit`, every row of the filtered source that has a selected key: `ORDER BY key
    LIMIT n` may cut between two rows of one key and keep either, so the rows after the limit
    alone would hide the repeat. Included by the statements that count repeated keys. -#}
{% if limit %}(
  SELECT {{ key }}
  FROM {{ source }}
  WHERE {{ key }} IN (SELECT {{ key }} FROM src)
{% if where %}
    AND ({{ where }})
{% endif %}
) AS `_selected_rows`{% else %}fingerprinted{% endif %}

