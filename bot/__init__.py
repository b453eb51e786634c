"""The front process: configuration, command line, persistence and orchestration."""
