-- A share of flights is a fraction: any row returned here is a bug in the mart.
select date, carrier, origin, share_delayed
from {{ ref('daily_carrier_delays') }}
where share_delayed < 0 or share_delayed > 1
