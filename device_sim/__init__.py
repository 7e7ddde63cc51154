"""Simulated IoT devices for iotfl: torch training, a battery / duty-cycle / RAM-class model, one real MQTT
connection per device, and a fleet runner (``device_sim.fleet.run_fleet``)."""
