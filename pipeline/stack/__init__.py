"""A local, real stack without Docker: a single-node KRaft Kafka broker run from Maven
jars, the pipeline's topics, and Debian's Prometheus. Used by `pulse stack` and the tests.

Every process listens on 127.0.0.1 only and is stopped by its process id.
"""
