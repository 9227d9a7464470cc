"""The gateway: the only door into the pipeline.

HTTP shell (``app``) -> signature check (``signatures``) -> pure adapters
(``adapters``) -> durable acceptance on Kafka (``producer``). ``openapi``
describes the HTTP surface; ``command`` is ``pulse gateway``.
"""
