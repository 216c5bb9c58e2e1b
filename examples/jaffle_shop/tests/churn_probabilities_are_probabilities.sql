-- a singular test: every score the service returned is a probability
select customer_id, churn_probability
from {{ ref('customer_churn_scores') }}
where churn_probability < 0 or churn_probability > 1
