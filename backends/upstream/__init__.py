"""Models served by other inference servers: ``backend: upstream``.

The gateway keeps everything it adds (its dialects, validation, the Responses and Realtime APIs, the
speech pipeline) and hands the engine's work to one or more replicas of a server that already speaks
a known API (vLLM, llama-server, TGI, SGLang, Ollama, another SYN4PSE):

- :mod:`.options` — what ``options:`` of such a model hold;
- :mod:`.pool` — the replicas: least-outstanding balancing, passive and active health, a circuit
  breaker, optional prefix affinity;
- :mod:`.client` — one request sent with failover to another replica until its first byte arrives;
- :mod:`.dialect` — how requests and answers are written for the upstream's API. The wire itself lives in
  ``compat`` (``compat/openai/upstream.py``), which registers it here; backends never name wire fields;
- :mod:`.chat`, :mod:`.embeddings`, :mod:`.transcription`, :mod:`.speech` — one backend per model type.
"""
