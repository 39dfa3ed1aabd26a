{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date',
    )
}}

-- Each day's delays per carrier and origin airport, beside that day's weather at the airport.

with flights as (

    select * from {{ ref('stg_flights') }}
    {% if is_incremental() %}
    where date >= (select max(date) from {{ this }})
    {% endif %}

),

weather as (

    select * from {{ ref('stg_weather') }}
    {% if is_incremental() %}
    where date >= (select max(date) from {{ this }})
    {% endif %}

),

delays as (

    select
        date,
        carrier,
        origin,
        count(*) as flights,
        avg(dep_delay_minutes) as mean_dep_delay_minutes,
        avg(arr_delay_minutes) as mean_arr_delay_minutes,
        {{ share_of('dep_delay_minutes > ' ~ var('delay_threshold_minutes')) }} as share_delayed
    from flights
    group by date, carrier, origin

),

daily_weather as (

    select
        date,
        origin,
        avg(wind_speed_mph) as mean_wind_mph,
        sum(precipitation_in) as precipitation_in,
        avg(visibility_mi) as mean_visibility_mi
    from weather
    group by date, origin

)

select
    delays.date,
    delays.carrier,
    delays.origin,
    delays.flights,
    delays.mean_dep_delay_minutes,
    delays.mean_arr_delay_minutes,
    delays.share_delayed,
    daily_weather.mean_wind_mph,
    daily_weather.precipitation_in,
    daily_weather.mean_visibility_mi
from delays
left join daily_weather
    on delays.date = daily_weather.date and delays.origin = daily_weather.origin
