"""ML worker: job contract, producer client, mapping engine and the SQS consumer.

Keep this file free of imports: the API imports worker.producer and must not pay for the rest.
"""

__version__ = "0.1.0"
