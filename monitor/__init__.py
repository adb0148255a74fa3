"""railguard: health monitoring with automatic rollback for services deployed on Railway."""

__version__ = "0.1.0"
