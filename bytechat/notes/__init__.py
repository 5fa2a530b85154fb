"""The user's notes: reading them, blocks, the search index, retrieval, grounded dialogues, synthetic pages."""
