"""The OpenAI wire format: request and response structs and their translation to domain types."""
