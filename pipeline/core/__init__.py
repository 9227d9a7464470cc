"""The pure core: dedupe, event-time windows, first responses, concentration and health.

No I/O anywhere in this package; ``engine.CommunityEngine`` is the entry point.
"""
