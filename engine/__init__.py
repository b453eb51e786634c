"""The GPU worker: job contract, queue transports, diffusers pipelines."""
