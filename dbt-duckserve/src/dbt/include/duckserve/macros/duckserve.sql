{#- Run one of duckserve's statements (or any SQL) and log what it returns, one line per row:
      dbt run-operation duckserve_run --args "{sql: 'SHOW SERVICES'}"
    also usable in hooks: on-run-start: ["{{ duckserve_run('ALTER SERVICE churn_svc RESUME') }}"] -#}
{% macro duckserve_run(sql) %}
  {% if execute %}
    {% set result = run_query(sql) %}
    {% if result is not none and result.column_names %}
      {{ log(result.column_names | join(' | '), info=True) }}
      {% for row in result.rows %}
        {{ log(row.values() | join(' | '), info=True) }}
      {% endfor %}
    {% endif %}
  {% endif %}
{% endmacro %}
