-- Every carrier over all the days built: flights, mean delays, the share delayed, and its name.

with flights as (

    select * from {{ ref('stg_flights') }}

),

airlines as (

    select * from {{ source('flights', 'airlines') }}

),

per_carrier as (

    select
        carrier,
        count(*) as flights,
        count(distinct date) as days,
        count(distinct origin) as origins,
        avg(dep_delay_minutes) as mean_dep_delay_minutes,
        avg(arr_delay_minutes) as mean_arr_delay_minutes,
        {{ share_of('dep_delay_minutes > ' ~ var('delay_threshold_minutes')) }} as share_delayed
    from flights
    group by carrier

)

select
    per_carrier.carrier,
    airlines.name as carrier_name,
    per_carrier.flights,
    per_carrier.days,
    per_carrier.origins,
    per_carrier.mean_dep_delay_minutes,
    per_carrier.mean_arr_delay_minutes,
    per_carrier.share_delayed
from per_carrier
left join airlines on per_carrier.carrier = airlines.carrier
