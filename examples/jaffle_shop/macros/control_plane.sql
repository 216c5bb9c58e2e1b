{#- The compute pool and image repository the churn service runs on. on-run-start calls it before
    every dbt command; `dbt run-operation create_control_plane` runs it on its own. -#}
{% macro create_control_plane() %}
  {% if execute %}
    {% set statements %}
      CREATE COMPUTE POOL IF NOT EXISTS {{ var('compute_pool') }}
        MIN_NODES = 1
        MAX_NODES = 1
        INSTANCE_FAMILY = 'CPU_X64_XS'
        AUTO_RESUME = TRUE;
      CREATE IMAGE REPOSITORY IF NOT EXISTS {{ var('image_repo') }};
    {% endset %}
    {% do run_query(statements) %}
    {{ log("control plane ready: compute pool " ~ var('compute_pool') ~ ", image repository " ~ var('image_repo'), info=True) }}
  {% endif %}
{% endmacro %}

{#- `dbt run-operation drop_churn_service`: stop the service and drop it (the model stays logged). -#}
{% macro drop_churn_service() %}
  {% do run_query("DROP SERVICE IF EXISTS " ~ var('churn_service')) %}
  {{ log("dropped service " ~ var('churn_service'), info=True) }}
{% endmacro %}
