"""The embedded model server: llama.cpp (llama-cpp-python) serving the bundled Gemma GGUF behind an
OpenAI-compatible HTTP API, with the /tokenize and echo log-probabilities Experiment 2 needs."""
