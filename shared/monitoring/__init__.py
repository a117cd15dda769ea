"""The monitoring core shared by both verticals: drift (PSI), freshness SLOs, alerts, metrics.

It reads run records and monitored streams from the metadata store and never imports a
vertical; verticals feed it values (query lengths, frame brightness, …) and it says, loudly,
when something shifted, failed or went stale.
"""
