{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='date',
    )
}}

-- Flights that departed (a departure time and an air time), one row per flight, named and typed
-- for the marts. Cancelled flights have neither and are left out.

with source as (

    select * from {{ source('flights', 'raw_flights') }}
    {% if is_incremental() %}
    -- the newest day already built is rebuilt too, in case more of it arrived since
    where date >= (select max(date) from {{ this }})
    {% endif %}

),

departed as (

    select * from source
    where dep_time is not null and air_time is not null

)

select
    date,
    carrier || '-' || flight || '-' || strftime(time_hour at time zone 'UTC', '%Y-%m-%dT%H:%M') as flight_id,
    carrier,
    cast(flight as integer) as flight_number,
    tailnum as tail_number,
    origin,
    dest as destination,
    time_hour as scheduled_hour,
    cast(dep_time as integer) as departure_hhmm,
    cast(dep_delay as double) as dep_delay_minutes,
    cast(arr_delay as double) as arr_delay_minutes,
    cast(air_time as double) as air_time_minutes,
    cast(distance as double) as distance_miles,
    cast(distance as double) / (air_time / 60.0) as speed_mph
from departed
