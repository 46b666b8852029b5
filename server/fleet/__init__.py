"""The fleet over MQTT: ``model`` (topics, payloads, the outbox; pure) and ``mqtt``
(the bridge: a paho client in vigil's loop)."""
