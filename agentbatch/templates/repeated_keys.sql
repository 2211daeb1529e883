{#- The source keys that occur more than once, the most repeated first (for the error message). -#}
WITH
{% include "_source.sql" %}
SELECT CAST({{ key }} AS STRING) AS `key`, count(*) AS `copies`
FROM {% include "_repeated_rows.sql" %}
GROUP BY {{ key }}
HAVING count(*) > 1
ORDER BY `copies` DESC, `key`
LIMIT 5
