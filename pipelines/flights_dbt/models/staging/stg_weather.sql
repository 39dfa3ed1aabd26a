{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date',
    )
}}

-- Hourly weather observations, one row per airport and hour: `obs_id` names the observation.

with source as (

    select * from {{ source('flights', 'raw_weather') }}
    {% if is_incremental() %}
    where date >= (select max(date) from {{ this }})
    {% endif %}

)

select
    date,
    origin || '-' || strftime(time_hour at time zone 'UTC', '%Y-%m-%dT%H:%M') as obs_id,
    origin,
    time_hour as observed_hour,
    cast(temp as double) as temperature_f,
    cast(dewp as double) as dew_point_f,
    cast(humid as double) as humidity_pct,
    cast(wind_speed as double) as wind_speed_mph,
    cast(wind_gust as double) as wind_gust_mph,
    cast(precip as double) as precipitation_in,
    cast(pressure as double) as pressure_mb,
    cast(visib as double) as visibility_mi
from source
