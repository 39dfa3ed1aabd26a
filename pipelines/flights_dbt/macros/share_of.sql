{#- The share of a group's rows for which `condition` holds (a SQL boolean expression), in [0, 1];
    rows where it is null count as not holding. -#}
{% macro share_of(condition) -%}
    avg(case when {{ condition }} then 1.0 else 0.0 end)
{%- endmacro %}
