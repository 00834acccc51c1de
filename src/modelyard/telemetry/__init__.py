"""What the gateway measures, from its window to the ranges its readers query.

- :mod:`~modelyard.telemetry.records`: the values (`Sample`, `Point`, `TrafficMinute`, the
  latency `BUCKETS`);
- :mod:`~modelyard.telemetry.window`: what the gateway counts between two reports;
- :mod:`~modelyard.telemetry.measurements`: the reports of the last hour, in the control plane's
  memory, and their per-minute sums waiting to be written;
- :mod:`~modelyard.telemetry.minutes`: the per-minute counts, stored;
- :mod:`~modelyard.telemetry.query`: `Telemetry`, the one range query of rollouts, SLOs and the
  dashboard (``series`` and ``totals``).

Telemetry imports no other subsystem but the store: serving, delivery, the gateway and the
dashboard import it. Importing this package loads nothing (the gateway reads only ``window``).
"""
