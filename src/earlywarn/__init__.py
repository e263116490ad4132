"""earlywarn: sensor monitoring and early warning for hazardous plants.

MQTT telemetry in, vectorized event-time rules, alarms tracked to close-out, DuckDB history.
Nothing heavy is imported here so that `earlywarn --help` stays fast.
"""

__version__ = "0.1.0"
