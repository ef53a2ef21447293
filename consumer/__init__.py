"""The genre classification consumer service."""
