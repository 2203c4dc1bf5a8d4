"""Test helpers users may reuse: a loopback OpenAI-compatible server for exercising teachers offline."""
