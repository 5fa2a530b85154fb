"""Data sources: WikiText, the user's Roam notes and the dialogue primer."""
