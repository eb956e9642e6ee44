"""autonomic: a durable, event-driven runtime for autonomous LLM agents."""
