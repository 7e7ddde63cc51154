"""iotfl: federated learning for IoT fleets over MQTT. The ``iotfl`` command composes flcore, device_sim,
gateway and cloud."""

__version__ = "0.1.0"
