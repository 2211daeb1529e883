{#- Push-down, mode append: insert answers for keys not yet answered with this request. -#}
INSERT INTO {{ output }}
{% include "_answers.sql" %}
