"""The producer side for inference services: ``InferenceLogger`` (threads), ``AsyncInferenceLogger`` (asyncio)
and ``inference_record`` (one record of the event contract from a model's output). The loggers never block the
serving path: a bounded queue, drops counted. Implemented in :mod:`streams.client` (Kafka I/O).

>>> from monitor.client import inference_record
>>> record = inference_record("key-1", "fraud", 0.93, features=[1.0, 2.0], event_id="e1", ts=1795600800.0)
>>> record["prediction"]["label"], record["prediction"]["confidence"], record["input"]
(1, 0.93, {'features': [1.0, 2.0]})
"""

from streams.client import AsyncInferenceLogger, ClientStats, InferenceLogger, inference_record

__all__ = ["AsyncInferenceLogger", "ClientStats", "InferenceLogger", "inference_record"]
