"""The stream worker: Faust agents around the pure engine of ``pipeline.core``."""
