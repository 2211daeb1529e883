{#- The rows the target holds for this selection with the current fingerprint, with the current
    source columns. Disjoint from `todo` by construction (`todo` is `fingerprinted` without
    `done`). The built-ins use `_held_rows.sql`; this stays for project templates that include
    it. -#}
SELECT
  fingerprinted.{{ key }},
{% for column in columns %}
  fingerprinted.{{ column }},
{% endfor %}
{% for column in result_columns %}
  done.{{ column }}{% if not loop.last %},{% endif +%}
{% endfor %}
FROM done
JOIN fingerprinted ON done.{{ key }} = fingerprinted.{{ key }}
