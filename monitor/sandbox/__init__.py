"""Local stand-ins for Railway and a monitored service, used by the demo and the tests."""
