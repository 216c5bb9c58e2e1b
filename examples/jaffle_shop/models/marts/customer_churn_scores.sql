{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        tags=['ml']
    )
}}

-- Each customer with orders, scored by the CHURN_SVC service (models/ml/churn_service.py deploys it:
-- the ref below makes dbt build that model first).
-- depends_on: {{ ref('churn_service') }}
-- Incremental: a later run scores only customers who are new or have ordered since they were scored.
with to_score as (
    select
        customer_id,
        most_recent_order,
        number_of_orders::double as number_of_orders,
        customer_lifetime_value::double as lifetime_value,
        date_diff('day', most_recent_order, '{{ var("as_of_date") }}'::date)::double as days_since_last_order
    from {{ ref('customers') }} as c
    where number_of_orders > 0
    {% if is_incremental() %}
      and not exists (
          select 1 from {{ this }} as scored
          where scored.customer_id = c.customer_id and scored.most_recent_order >= c.most_recent_order
      )
    {% endif %}
),

scored as materialized (
    select
        *,
        {{ var('churn_service') }}!predict_proba(number_of_orders, lifetime_value, days_since_last_order) as probabilities
    from to_score
)

select
    customer_id,
    most_recent_order,
    number_of_orders,
    lifetime_value,
    days_since_last_order,
    round(probabilities.output_feature_1, 4) as churn_probability,
    probabilities.output_feature_1 > 0.5 as likely_to_churn,
    '{{ run_started_at }}'::timestamptz as scored_at
from scored
