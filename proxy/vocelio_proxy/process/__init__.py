"""The process's shared state and services, below the pipeline: the live routing
state, the mutable gateway state, metrics, the access log, the Redis limiter and supervised loops."""
