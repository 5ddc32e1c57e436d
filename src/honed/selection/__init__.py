"""Choosing a base model: rank measured candidates under the user's constraints and report the result."""
