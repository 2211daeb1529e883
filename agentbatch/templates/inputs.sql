{#- REST fallback: the rows to send, with their request text and fingerprint. -#}
WITH
{% include "_source.sql" %}
SELECT
  {{ key }},
{% for column in columns %}
  {{ column }},
{% endfor %}
  `_request`,
{% if files %}
  `_file`,
  `_file_name`,
{% endif %}
  `request_fingerprint`
FROM todo
