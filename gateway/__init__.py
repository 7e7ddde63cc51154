"""iotfl's gateway service for a Raspberry Pi: collect device updates over MQTT, aggregate, forward to the cloud.

numpy only (no torch), so a Pi install stays light. ``gateway.service.run`` is the entry point.
"""
