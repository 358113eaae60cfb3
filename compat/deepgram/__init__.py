"""Deepgram's wire format: query parameters, response JSON, live-stream messages, errors."""
