"""Model backends: one protocol, several implementations (Hugging Face, OpenAI, vLLM)."""
